-- Counters (issue 18): a task's history as policy sees it (grants by resource, sensitivity and
-- action, renewals, leaks, tool uses) and the budgets of tasks and workloads. Each row is
-- written in the same transaction as what it counts. `window_start` (Unix seconds, 0 for a
-- counter that never resets) is the fixed window the count belongs to: an increment in a newer
-- window replaces the count. `cap` is the limit the last increment was checked against.
CREATE TABLE counters (
    scope        TEXT    NOT NULL,
    subject      TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    window_start INTEGER NOT NULL,
    count        INTEGER NOT NULL,
    cap          INTEGER,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (scope, subject, name)
) STRICT;
-- Live-lease budgets of a workload count the leases of its open tasks.
CREATE INDEX tasks_owner_state ON tasks (owner_id, state);
