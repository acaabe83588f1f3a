// aedes for `ubroker bench`: an in-memory broker on 127.0.0.1:PORT, stopped by SIGTERM.
// usage: node bench/aedes_server.mjs PORT      (aedes comes from bench/node_modules, pinned)
import net from 'node:net'
import { Aedes } from 'aedes'

const port = parseInt(process.argv[2], 10)
if (!port) {
  console.error('usage: node aedes_server.mjs PORT')
  process.exit(2)
}
const broker = await Aedes.createBroker()
const server = net.createServer(broker.handle)
server.listen(port, '127.0.0.1', () => console.log('aedes listening on 127.0.0.1:' + port))
const stop = () => server.close(() => broker.close(() => process.exit(0)))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
