// One MQTT.js client (npm `mqtt`, as browser apps use it) through a WebSocket URL: it subscribes
// to a topic at QoS 2, publishes one message at each QoS 0, 1 and 2 to it, and prints one JSON
// line: {"connack": ..., "granted": [...], "got": [[qos, payload], ...]}. For
// tests/protocol/test_ws_mqttjs.py.
//   node roundtrip.mjs URL PROTOCOL_VERSION [CA_FILE]
import fs from "node:fs";
import mqtt from "mqtt";

const [url, level, ca] = process.argv.slice(2);
const opts = {
  protocolVersion: Number(level),
  clientId: "mqttjs-" + Math.random().toString(16).slice(2, 10),
  reconnectPeriod: 0,
  connectTimeout: 10000,
};
if (opts.protocolVersion === 3) opts.protocolId = "MQIsdp";
if (ca) {
  opts.ca = fs.readFileSync(ca);
  opts.rejectUnauthorized = true;
}
const topic = "mqttjs/" + opts.clientId;
const out = { connack: null, granted: [], got: [] };
const done = (code) => {
  console.log(JSON.stringify(out));
  process.exit(code);
};
setTimeout(() => done(2), 15000);

const client = mqtt.connect(url, opts);
let ending = false;
client.on("error", (e) => {
  // After DISCONNECT the broker closes the TCP connection at once (MQTT 3.1.1 section 3.14.4), and the
  // WebSocket's own close frame may then meet a closed socket: not the test's concern.
  if (ending) return;
  out.error = String(e);
  done(1);
});
client.on("connect", (connack) => {
  out.connack = connack.returnCode ?? connack.reasonCode ?? 0;
  client.subscribe(topic, { qos: 2 }, (err, granted) => {
    if (err) {
      out.error = String(err);
      done(1);
    }
    out.granted = granted.map((g) => g.qos);
    for (const qos of [0, 1, 2]) client.publish(topic, "q" + qos, { qos });
  });
});
client.on("message", (t, payload, packet) => {
  out.got.push([packet.qos, payload.toString()]);
  if (out.got.length === 3) {
    ending = true;
    client.end(false, () => done(0));
  }
});
