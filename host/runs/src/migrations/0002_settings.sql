-- Settings every replica must share, recorded by the first replica and compared by the others at
-- start (a replica with another secrets key could not open the queue's requests; one with another
-- storage backend would write runs elsewhere).
CREATE TABLE sluice_settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);
