-- Operators (issue 15): kill-switch freezes, and the indexes the operators' lists page on.
--
-- A freeze refuses grants, claims and renewals in its scope until lifted. Every grant reads the
-- active ones from here (no cache), so a freeze holds at once on every replica and after a
-- restart. `body` is the whole `Freeze` as JSON; `state` is `active` or `lifted`.
CREATE TABLE freezes (
    id          TEXT   PRIMARY KEY,
    state       TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    version     BIGINT NOT NULL,
    body        TEXT   NOT NULL
);

CREATE INDEX freezes_state ON freezes (state, created_at, id);
CREATE INDEX tasks_state_id ON tasks (state, id);
