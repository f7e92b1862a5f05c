-- bitsweep results database, version 1: models, sweeps, trials, leases, results, per-layer
-- formats, calibration statistics, workers. See README.md in this folder for what each table
-- holds and for example queries.
--
-- Conventions: times are milliseconds since the Unix epoch (UTC); accuracies are fractions in
-- [0, 1]; sizes are bits; energies are picojoules per inference; states are lower-case words.
-- Protobuf columns (`*_proto`) hold the exact bytes the API returns; the plain columns next to
-- them are copies made for SQL.

CREATE TABLE models (
  hash        TEXT PRIMARY KEY,          -- lower-case hex SHA-256 of `bytes`
  name        TEXT NOT NULL,             -- for people, e.g. "lenet5.onnx"
  size_bytes  INTEGER NOT NULL,
  bytes       BLOB NOT NULL,             -- the ONNX file
  created_ms  INTEGER NOT NULL
);

CREATE TABLE workers (
  id              TEXT PRIMARY KEY,      -- issued by Register
  name            TEXT NOT NULL,         -- for people, e.g. the host name
  threads         INTEGER NOT NULL,
  engine_version  TEXT NOT NULL,
  registered_ms   INTEGER NOT NULL,
  last_seen_ms    INTEGER NOT NULL       -- last Register, Lease, Heartbeat or Report (to ~1 s)
);

CREATE TABLE sweeps (
  id             INTEGER PRIMARY KEY,
  name           TEXT NOT NULL,
  model_hash     TEXT NOT NULL REFERENCES models(hash),
  strategy       TEXT NOT NULL,
  dataset_eval   TEXT NOT NULL,
  error_margin   REAL NOT NULL,          -- percentage points of top-1 (default 1.0 filled in)
  max_attempts   INTEGER NOT NULL,       -- per trial (default 3 filled in)
  spec_proto     BLOB NOT NULL,          -- bitsweep.v1.SweepSpec as submitted
  spec_json      TEXT NOT NULL,          -- the same, as JSON for json_extract()
  state          TEXT NOT NULL
                 CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
  stage          TEXT NOT NULL DEFAULT '',   -- the planner step running now (or the last one)
  step           INTEGER NOT NULL DEFAULT 0, -- planner steps issued so far
  error          TEXT NOT NULL DEFAULT '',
  baseline_top1  REAL,                   -- from the first succeeded trial of stage 'baseline'
  best_trial_id  INTEGER,                -- smallest size within the margin
  version        INTEGER NOT NULL DEFAULT 1, -- bumped on every change (watchers wait on it)
  created_ms     INTEGER NOT NULL,
  updated_ms     INTEGER NOT NULL,
  finished_ms    INTEGER                 -- NULL while queued or running
);

-- One row per planner step of a sweep: when it started and finished.
CREATE TABLE sweep_stages (
  sweep_id     INTEGER NOT NULL REFERENCES sweeps(id),
  step         INTEGER NOT NULL,         -- 1, 2, ...
  stage        TEXT NOT NULL,
  trials       INTEGER NOT NULL,         -- trials the step emitted
  started_ms   INTEGER NOT NULL,
  finished_ms  INTEGER,                  -- NULL while running (or when the sweep was cancelled)
  PRIMARY KEY (sweep_id, step)
);

CREATE TABLE trials (
  id                 INTEGER PRIMARY KEY,
  sweep_id           INTEGER NOT NULL REFERENCES sweeps(id),
  step               INTEGER NOT NULL,   -- sweep_stages.step that emitted it
  stage              TEXT NOT NULL,
  label              TEXT NOT NULL,
  spec_proto         BLOB NOT NULL,      -- bitsweep.v1.TrialSpec as the planner emitted it
  config_json        TEXT NOT NULL,      -- canonical quantization config
  config_hash        TEXT NOT NULL,      -- SHA-256 of config_json
  dedup_key          TEXT NOT NULL,      -- SHA-256 of (model, eval settings, config, fine-tuning)
  state              TEXT NOT NULL
                     CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
  attempts           INTEGER NOT NULL DEFAULT 0,  -- leases handed out
  error              TEXT NOT NULL DEFAULT '',    -- the last worker error
  cached             INTEGER NOT NULL DEFAULT 0,  -- 1: the result is trial cached_from's
  cached_from        INTEGER REFERENCES trials(id),
  -- While queued: an identical trial that is queued or running; this one completes with its
  -- result instead of running itself.
  duplicate_of       INTEGER REFERENCES trials(id),
  lease_id           TEXT,               -- the current (or last) lease
  worker_id          TEXT,
  lease_deadline_ms  INTEGER,
  created_ms         INTEGER NOT NULL,
  started_ms         INTEGER,            -- first lease
  finished_ms        INTEGER
);
-- The scheduler's queue: oldest sweep first, then oldest trial (FIFO between sweeps).
CREATE INDEX trials_queue ON trials(sweep_id, id)
  WHERE state = 'queued' AND duplicate_of IS NULL;
-- Lease expiry scans only running trials.
CREATE INDEX trials_running_deadline ON trials(lease_deadline_ms) WHERE state = 'running';
-- Per-sweep counters and "is this step finished" (covering).
CREATE INDEX trials_sweep_state ON trials(sweep_id, state, cached);
-- Without `state`, so that the index is not rewritten on every state change.
CREATE INDEX trials_dedup ON trials(dedup_key);
CREATE INDEX trials_duplicate_of ON trials(duplicate_of) WHERE duplicate_of IS NOT NULL;

-- Every lease ever handed out: reports are idempotent per lease, heartbeats are answered from it.
CREATE TABLE leases (
  id               TEXT PRIMARY KEY,
  trial_id         INTEGER NOT NULL REFERENCES trials(id),
  worker_id        TEXT NOT NULL REFERENCES workers(id),
  attempt          INTEGER NOT NULL,     -- 1 for the trial's first lease
  leased_ms        INTEGER NOT NULL,
  ended_ms         INTEGER,
  -- NULL while live; 'result', 'error', 'expired', 'cancelled' (the sweep was cancelled) or
  -- 'superseded' (another lease of the trial finished it).
  outcome          TEXT,
  report_accepted  INTEGER               -- NULL until reported; then the first answer (0 or 1)
) WITHOUT ROWID;                         -- one b-tree keyed by the lease id
CREATE INDEX leases_trial ON leases(trial_id);

-- One row per trial a worker actually evaluated. Cached trials point at it via cached_from.
CREATE TABLE results (
  trial_id              INTEGER PRIMARY KEY REFERENCES trials(id),
  dedup_key             TEXT NOT NULL,
  lease_id              TEXT,
  worker_id             TEXT,
  top1                  REAL NOT NULL,
  top5                  REAL NOT NULL,
  loss                  REAL,            -- NULL when the worker reported a non-finite loss
  samples               INTEGER NOT NULL,
  size_bits             INTEGER NOT NULL,
  peak_activation_bits  INTEGER NOT NULL,
  activation_bits       INTEGER NOT NULL,
  bops                  INTEGER NOT NULL,
  macs                  INTEGER NOT NULL,
  energy_pj             REAL NOT NULL,
  hardware_profile      TEXT NOT NULL,
  wall_seconds          REAL NOT NULL,
  images_per_second     REAL NOT NULL,
  engine_version        TEXT NOT NULL,
  top1_before_finetune  REAL,
  result_proto          BLOB NOT NULL,   -- bitsweep.v1.TrialResult as reported
  created_ms            INTEGER NOT NULL
);
CREATE INDEX results_dedup ON results(dedup_key, trial_id);

-- The formats each evaluated trial used, one row per quantizable layer (from TrialResult.layers).
-- Per role: format string, storage width, and the parameter calibration chose (fractional
-- bits for fixed point, scale / zero point as JSON arrays for integers, the largest exponent for
-- power-of-two). A role the worker did not report has NULL columns.
CREATE TABLE trial_layers (
  trial_id                INTEGER NOT NULL REFERENCES results(trial_id),
  layer_index             INTEGER NOT NULL,   -- order in the network
  name                    TEXT NOT NULL,      -- ONNX node name
  layer_class             TEXT NOT NULL,      -- 'conv' or 'fc'
  weights_format          TEXT,
  weights_bits            INTEGER,
  weights_fractional_bits INTEGER,
  weights_scale           TEXT,
  weights_zero_point      TEXT,
  weights_max_exponent    INTEGER,
  inputs_format           TEXT,
  inputs_bits             INTEGER,
  inputs_fractional_bits  INTEGER,
  inputs_scale            TEXT,
  inputs_zero_point       TEXT,
  outputs_format          TEXT,
  outputs_bits            INTEGER,
  outputs_fractional_bits INTEGER,
  outputs_scale           TEXT,
  outputs_zero_point      TEXT,
  macs                    INTEGER NOT NULL,
  weight_count            INTEGER NOT NULL,
  weight_bits             INTEGER NOT NULL,
  activation_bits         INTEGER NOT NULL,
  bops                    INTEGER NOT NULL,
  energy_pj               REAL NOT NULL,
  PRIMARY KEY (trial_id, layer_index)
);

-- Activation ranges measured on a calibration split (fp32 network), the latest per model, split
-- and layer; filled from results whose LayerResult carries ranges (trials with collect_ranges).
CREATE TABLE calibration_stats (
  model_hash           TEXT NOT NULL REFERENCES models(hash),
  dataset              TEXT NOT NULL,    -- DatasetRef.train
  calibration_samples  INTEGER NOT NULL, -- 1000 when the spec said 0
  layer                TEXT NOT NULL,
  input_min            REAL,
  input_max            REAL,
  input_count          INTEGER,
  output_min           REAL,
  output_max           REAL,
  output_count         INTEGER,
  trial_id             INTEGER NOT NULL REFERENCES results(trial_id),
  updated_ms           INTEGER NOT NULL,
  PRIMARY KEY (model_hash, dataset, calibration_samples, layer)
);

-- ---------------------------------------------------------------------------------------------
-- Views for people.

-- One row per trial with its result (its own, or the one it reused when cached) and whether it
-- is within the sweep's error margin of the baseline (with the service's 1e-9 tolerance, so a
-- top-1 exactly on the boundary counts).
CREATE VIEW trial_summary AS
SELECT
  t.id AS trial_id,
  t.sweep_id,
  s.name AS sweep_name,
  t.stage,
  t.label,
  t.state,
  t.cached,
  t.cached_from,
  t.attempts,
  t.config_hash,
  r.top1,
  r.top5,
  r.loss,
  r.size_bits,
  r.peak_activation_bits,
  r.energy_pj,
  r.bops,
  r.top1_before_finetune,
  s.baseline_top1,
  CASE WHEN r.top1 IS NULL OR s.baseline_top1 IS NULL THEN NULL
       ELSE r.top1 >= s.baseline_top1 - s.error_margin / 100.0 - 1e-9 END AS within_margin,
  -- "conv1 w=fixed:4 in=fixed:8 out=fixed:8; fc1 w=..." in network order
  (SELECT group_concat(layer_desc, '; ') FROM (
     SELECT l.name || ' w=' || coalesce(l.weights_format, '-') ||
            ' in=' || coalesce(l.inputs_format, '-') ||
            ' out=' || coalesce(l.outputs_format, '-') AS layer_desc
     FROM trial_layers l WHERE l.trial_id = r.trial_id ORDER BY l.layer_index)) AS layers,
  t.error,
  t.created_ms,
  t.finished_ms
FROM trials t
JOIN sweeps s ON s.id = t.sweep_id
LEFT JOIN results r ON r.trial_id = coalesce(t.cached_from, t.id) AND t.state = 'succeeded';

-- One row per (trial, layer) for every succeeded trial, cached ones included.
CREATE VIEW trial_layer_formats AS
SELECT t.id AS trial_id, t.sweep_id, t.stage, t.label, t.cached,
  l.layer_index, l.name, l.layer_class,
  l.weights_format, l.weights_bits, l.weights_fractional_bits, l.weights_scale,
  l.weights_zero_point, l.weights_max_exponent,
  l.inputs_format, l.inputs_bits, l.inputs_fractional_bits, l.inputs_scale, l.inputs_zero_point,
  l.outputs_format, l.outputs_bits, l.outputs_fractional_bits, l.outputs_scale,
  l.outputs_zero_point,
  l.macs, l.weight_count, l.weight_bits, l.activation_bits, l.bops, l.energy_pj
FROM trials t
JOIN trial_layers l ON l.trial_id = coalesce(t.cached_from, t.id)
WHERE t.state = 'succeeded';

-- Per-sweep progress, the same numbers GetSweep reports.
CREATE VIEW sweep_progress AS
SELECT
  s.id AS sweep_id, s.name, s.strategy, s.state, s.stage, s.baseline_top1, s.best_trial_id,
  count(t.id) AS trials_total,
  coalesce(sum(t.state = 'queued'), 0) AS queued,
  coalesce(sum(t.state = 'running'), 0) AS running,
  coalesce(sum(t.state = 'succeeded'), 0) AS succeeded,
  coalesce(sum(t.state = 'succeeded' AND t.cached), 0) AS cached,
  coalesce(sum(t.state = 'failed'), 0) AS failed,
  coalesce(sum(t.state = 'cancelled'), 0) AS cancelled
FROM sweeps s LEFT JOIN trials t ON t.sweep_id = s.id
GROUP BY s.id;

-- The top-1 / size Pareto frontier of every sweep, recomputed by SQL: succeeded trials that no
-- other succeeded trial of the same sweep beats in one objective without losing in the other.
-- (Exact duplicates all appear here; the API keeps only the first.)
CREATE VIEW frontier_top1_size AS
SELECT a.*
FROM trial_summary a
WHERE a.state = 'succeeded'
  AND NOT EXISTS (
    SELECT 1 FROM trial_summary b
    WHERE b.sweep_id = a.sweep_id AND b.state = 'succeeded' AND b.trial_id <> a.trial_id
      AND b.top1 >= a.top1 AND b.size_bits <= a.size_bits
      AND (b.top1 > a.top1 OR b.size_bits < a.size_bits));
