// The agent's whole story on one slot (test/fixtures/agent/agent-story.ts), on the
// real kernel, with only the Kubernetes API faked: discovery → PV → Bound →
// NodePublish → write → NodeUnpublish (locked) → Released → crypto-erase → a
// new PV with a new key → the old handle refused → the old data unrecoverable.
import t from 'tap';
import { agentStory } from '../fixtures/agent/agent-story.js';

t.test('discover, offer, publish, lock, release, crypto-erase, offer afresh', async (t) => {
  await agentStory(t);
});
