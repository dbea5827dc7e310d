import t from 'tap'
import { matches, type CommandFilter, type CommandRecord } from '../lib/store.js'
import { command } from './fixtures/store-suite.js'

const record: CommandRecord = { id: 1, ...command({ deviceId: 'dev', command: 'go', networkId: 3, deviceTypeId: 7 }) }
const bare: CommandRecord = { id: 2, ...command({ deviceId: 'dev', command: 'go', networkId: null, deviceTypeId: null }) }

t.test('store: an empty filter matches everything', async (t) => {
  t.equal(matches({}, record), true)
  t.equal(matches({}, bare), true)
  t.equal(matches({ deviceId: undefined, networkIds: undefined, deviceTypeIds: undefined, names: undefined }, bare), true,
    'undefined fields are absent')
})

t.test('store: deviceId', async (t) => {
  t.equal(matches({ deviceId: 'dev' }, record), true)
  t.equal(matches({ deviceId: 'other' }, record), false)
  t.equal(matches({ deviceId: 'Dev' }, record), false, 'case-sensitive')
  t.equal(matches({ deviceId: '' }, record), false)
})

t.test('store: networkIds', async (t) => {
  t.equal(matches({ networkIds: [3] }, record), true)
  t.equal(matches({ networkIds: [1, 2, 3] }, record), true)
  t.equal(matches({ networkIds: [1, 2] }, record), false)
  t.equal(matches({ networkIds: [] }, record), false, 'an empty list matches nothing')
  t.equal(matches({ networkIds: [3] }, bare), false, 'a null networkId matches no list')
  t.equal(matches({ networkIds: [] }, bare), false)
})

t.test('store: deviceTypeIds', async (t) => {
  t.equal(matches({ deviceTypeIds: [7] }, record), true)
  t.equal(matches({ deviceTypeIds: [3] }, record), false, 'not confused with networkId')
  t.equal(matches({ deviceTypeIds: [] }, record), false)
  t.equal(matches({ deviceTypeIds: [7] }, bare), false, 'a null deviceTypeId matches no list')
})

t.test('store: names', async (t) => {
  t.equal(matches({ names: ['go'] }, record), true)
  t.equal(matches({ names: ['stop', 'go'] }, record), true)
  t.equal(matches({ names: ['Go', 'go '] }, record), false, 'exact names only')
  t.equal(matches({ names: [] }, record), false)
})

t.test('store: every field must match', async (t) => {
  const all: CommandFilter = { deviceId: 'dev', networkIds: [3], deviceTypeIds: [7], names: ['go'] }
  t.equal(matches(all, record), true)
  t.equal(matches({ ...all, deviceId: 'x' }, record), false)
  t.equal(matches({ ...all, networkIds: [4] }, record), false)
  t.equal(matches({ ...all, deviceTypeIds: [4] }, record), false)
  t.equal(matches({ ...all, names: ['stop'] }, record), false)
})
