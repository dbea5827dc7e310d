import t from 'tap'
import { memoryStore } from '../../lib/store/memory.js'
import { command, device, storeSuite } from '../fixtures/store-suite.js'

storeSuite(t, 'memory-store', () => memoryStore())

t.test('memory-store: every call creates an independent store', async (t) => {
  const a = memoryStore()
  const b = memoryStore()
  a.saveDevice(device({ id: 'dev' }))
  const id = a.insertCommand(command())
  t.equal(b.getDevice('dev'), undefined)
  t.equal(b.getCommand(id, 0), undefined)
  t.equal(b.lastCommandId(), 0)
  a.close()
  t.equal(b.insertCommand(command()), 1, 'closing one store leaves the other usable')
  b.close()
})
