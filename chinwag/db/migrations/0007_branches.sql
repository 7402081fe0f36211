-- Branches: a session's messages form a tree (regenerate and edit make siblings), and one branch of it is active.
--
-- Safe on a database with millions of messages: no existing message row is rewritten. A NULL `parent_seq` means the
-- message before it (`seq - 1`), which is what every message made before this migration has: existing sessions are
-- one branch without an UPDATE of `messages` (whose full-text index would make a rewrite slow). New messages store
-- their parent; 0 stands for "none" (a root), so that the effective parent `coalesce(parent_seq, seq - 1)` is one
-- indexable expression, 0 at every root. The wire shows 0 as null.
--
-- `on_branch` (a constant default: added without a rewrite) says whether the message is on the session's active
-- branch, root to `sessions.leaf_seq`; it is switched in the transaction that switches the branch, so the history
-- pages the active branch through the partial index below: keyset, no walk of the tree per page.

ALTER TABLE messages ADD COLUMN parent_seq integer;
ALTER TABLE messages ADD COLUMN on_branch boolean NOT NULL DEFAULT true;
CREATE INDEX messages_branch_idx ON messages (session_id, seq) WHERE on_branch;
-- Siblings (same parent, same role; in seq order without a sort) and children, for `sibling_seqs` and the walk down
-- to a branch's newest leaf.
CREATE INDEX messages_parent_idx ON messages (session_id, (coalesce(parent_seq, seq - 1)), role, seq);

-- The last message of the active branch (null: no messages). Sessions are few next to messages: set it here.
ALTER TABLE sessions ADD COLUMN leaf_seq integer;
UPDATE sessions SET leaf_seq = message_count WHERE message_count > 0;

-- Layer 1 items say which Layer 2 message they belong to: the user message for the user's input, the run's
-- assistant message for what the run produced. The model's view is the items whose message is on the active branch.
-- NULL (items from before this migration): the turn's user message for a user item, the message after it (the
-- run's assistant message, made right after the user's) for the rest.
ALTER TABLE llm_context ADD COLUMN message_seq integer;
