// aedes for `ubroker bench`: an in-memory broker on 127.0.0.1:PORT, stopped by SIGTERM; with
// WSPORT also MQTT over WebSockets on 127.0.0.1:WSPORT (any path, subprotocol mqtt), through the
// `ws` package as aedes' docs/Examples.md shows.
// usage: node bench/aedes_server.mjs PORT [WSPORT]   (aedes and ws come from bench/node_modules, pinned)
import net from 'node:net'
import { Aedes } from 'aedes'

const port = parseInt(process.argv[2], 10)
const wsPort = process.argv[3] ? parseInt(process.argv[3], 10) : 0
if (!port || (process.argv[3] && !wsPort)) {
  console.error('usage: node aedes_server.mjs PORT [WSPORT]')
  process.exit(2)
}
const broker = await Aedes.createBroker()
const server = net.createServer(broker.handle)
const closers = [(done) => server.close(done)]
if (wsPort) {
  // Imported only when asked for, so that a missing `ws` stops only the WebSockets scenario.
  const { WebSocketServer, createWebSocketStream } = await import('ws')
  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port: wsPort,
    handleProtocols: (offered) => (offered.has('mqtt') ? 'mqtt' : false)
  })
  wss.on('connection', (sock, req) => broker.handle(createWebSocketStream(sock), req))
  wss.on('listening', () => console.log('aedes websockets on 127.0.0.1:' + wsPort))
  closers.push((done) => wss.close(done))
}
server.listen(port, '127.0.0.1', () => console.log('aedes listening on 127.0.0.1:' + port))
const stop = () => {
  let left = closers.length
  for (const close of closers) close(() => { if (--left === 0) broker.close(() => process.exit(0)) })
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
