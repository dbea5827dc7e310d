import t from 'tap'
import { compareCursors } from '../../lib/store/store.js'

t.test('store: compareCursors orders by timestamp, then id', async (t) => {
  t.equal(compareCursors({ timestamp: 1, id: 9 }, { timestamp: 2, id: 1 }), -1, 'timestamp first')
  t.equal(compareCursors({ timestamp: 2, id: 1 }, { timestamp: 1, id: 9 }), 1)
  t.equal(compareCursors({ timestamp: 5, id: 1 }, { timestamp: 5, id: 2 }), -1, 'then id')
  t.equal(compareCursors({ timestamp: 5, id: 2 }, { timestamp: 5, id: 1 }), 1)
  t.equal(compareCursors({ timestamp: 5, id: 2 }, { timestamp: 5, id: 2 }), 0, 'equal')
  t.equal(compareCursors({ timestamp: -Infinity, id: Infinity }, { timestamp: 0, id: 0 }), -1, 'edges compare without NaN')
  t.equal(compareCursors({ timestamp: 0, id: 0 }, { timestamp: 0, id: -Infinity }), 1)
  t.equal(compareCursors({ timestamp: 0, id: Infinity }, { timestamp: 0, id: 7 }), 1)
})
