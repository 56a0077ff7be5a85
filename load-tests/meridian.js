// meridian's load scenarios. One runs per invocation, chosen with SCENARIO:
//   smoke     20 requests/s for 10 s: does everything answer, fast? (the test command runs this)
//   load      constant arrival rate (RATE/s, default 200) for DURATION (default 5m)
//   stress    arrival rate ramping from 100/s to PEAK (default 3000/s) over 10 min: the breaking point
//   spike     50/s, then PEAK (default 1500/s) within 10 s for 1 min, then back
//   soak      RATE/s (default 100) for DURATION (default 2h): leaks, slow drift
//   hpa-ramp  the HPA demo: base load, ramp past the CPU target, hold, release, hold (19 min);
//             RATE and PEAK set the base and peak (default: prod's, from hpa-ramp.json; the
//             dev-size rates are in load-tests/README.md); watch `kubectl get hpa -w`
//             (docs/scaling.md predicts the replica counts)
//   cleanup   no traffic: deletes the items tagged RUN_TAG, which an interrupted run left behind
// Target and key from env: ITEMS_URL, TIMEZONES_URL (`none`: no direct calls), API_KEY;
// P95_MS and P99_MS replace the scenario's latency limits (e.g. across the internet); MAX_VUS
// (default 500) caps the VUs the arrival-rate scenarios may start. Every item a run creates is
// deleted at the end; one left behind breaches a threshold. A create answered 429 by the write
// rate limit is counted in writes_rate_limited, not as a failed request (mix.js). SUMMARY_DIR
// (default .) gets summary-<scenario>.json; a short human summary goes to stdout. Exit 99 on a
// threshold breach.
//   k6 run --no-usage-report -e SCENARIO=smoke load-tests/meridian.js
import { Counter } from 'k6/metrics';
import { cleanUp, requestNames, sendOne, startRun } from './mix.js';

const SCENARIO = __ENV.SCENARIO || 'smoke';
const RATE = Number(__ENV.RATE || 0);
const PEAK = Number(__ENV.PEAK || 0);

const hpaRamp = JSON.parse(open('./hpa-ramp.json'));
const rampRate = (to) => (to === 'peak' ? PEAK || hpaRamp.peak_rps : RATE || hpaRamp.base_rps);

const arrival = (extra) => ({
  timeUnit: '1s', preAllocatedVUs: 50, maxVUs: Number(__ENV.MAX_VUS || 500), ...extra,
});

const scenarios = {
  smoke: arrival({ executor: 'constant-arrival-rate', rate: RATE || 20, duration: __ENV.DURATION || '10s', preAllocatedVUs: 5 }),
  load: arrival({ executor: 'constant-arrival-rate', rate: RATE || 200, duration: __ENV.DURATION || '5m' }),
  stress: arrival({
    executor: 'ramping-arrival-rate', startRate: 100,
    stages: [{ target: PEAK || 3000, duration: '10m' }, { target: PEAK || 3000, duration: '1m' }],
  }),
  spike: arrival({
    executor: 'ramping-arrival-rate', startRate: 50,
    stages: [
      { target: 50, duration: '1m' }, { target: PEAK || 1500, duration: '10s' },
      { target: PEAK || 1500, duration: '1m' }, { target: 50, duration: '10s' }, { target: 50, duration: '2m' },
    ],
  }),
  soak: arrival({ executor: 'constant-arrival-rate', rate: RATE || 100, duration: __ENV.DURATION || '2h' }),
  cleanup: { executor: 'shared-iterations', vus: 1, iterations: 1 },
  // Shaped for the prod HPA (70% of the app container's CPU request): the base load, a ramp
  // to twice what minReplicas pods absorb at the target, a hold long enough to scale out, then
  // back past the 5-minute scale-down window. The shape and its default rates (RATE, PEAK
  // override them) live in hpa-ramp.json, which docs/scaling.md's prediction replays.
  'hpa-ramp': arrival({
    executor: 'ramping-arrival-rate', startRate: rampRate('base'),
    stages: hpaRamp.stages.map((s) => ({ target: rampRate(s.to), duration: `${s.seconds}s` })),
  }),
};

if (!scenarios[SCENARIO]) {
  throw new Error(`SCENARIO=${SCENARIO}: choose one of ${Object.keys(scenarios).join(', ')}`);
}

// Error rate and latency limits per scenario. Loopback smoke must be near perfect; under
// stress and spike, shedding (503) is expected, so the limit is looser and the point is where
// it breaks. The write limit's 429s are never in `failed` (mix.js counts them apart).
//
// No threshold on the share of creates rate-limited: it follows from the offered write rate
// against WRITE_RATE_PER_SECOND times the pods serving, which a run does not know. At
// docs/scaling.md's prod peak, 6 pods take 300 of the mix's 660-830 creates/s; over the whole
// ramp capacity.py's replay puts it at 46-54% of creates (5-7% of all requests), so "must not
// dominate" would fail a healthy system. A limiter that
// refuses every write fails the run anyway: setup() then seeds no item.
const scenarioLimits = {
  smoke: { failed: 0.01, p95: 100, p99: 250 },
  load: { failed: 0.01, p95: 100, p99: 250 },
  stress: { failed: 0.10, p95: 1000, p99: 2500 },
  spike: { failed: 0.05, p95: 500, p99: 1500 },
  soak: { failed: 0.01, p95: 100, p99: 250 },
  'hpa-ramp': { failed: 0.02, p95: 250, p99: 1000 },
  cleanup: { failed: 0.01, p95: 1000, p99: 2500 },
}[SCENARIO];
const limits = {
  ...scenarioLimits,
  p95: Number(__ENV.P95_MS || scenarioLimits.p95),
  p99: Number(__ENV.P99_MS || scenarioLimits.p99),
};
const itemsLeftBehind = new Counter('test_items_left_behind');

export const options = {
  scenarios: { [SCENARIO]: scenarios[SCENARIO] },
  thresholds: {
    http_req_failed: [`rate<${limits.failed}`],
    http_req_duration: [`p(95)<${limits.p95}`, `p(99)<${limits.p99}`],
    // Per endpoint too, so one slow route cannot hide in the average of fast ones.
    ...Object.fromEntries(requestNames.map((name) => [`http_req_duration{name:${name}}`, [`p(99)<${limits.p99}`]])),
    test_items_left_behind: ['count<1'],
    // A 429 that does not say when to retry is not the write limit's: no excuse for it.
    writes_rate_limited_without_retry_after: ['count<1'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(95)', 'p(99)', 'max'],
  // Seeding waits out the write limit's 429s, should another client have spent the key's burst.
  setupTimeout: '60s',
  // Deleting what a run created takes a request per 1,000 items (180 for a prod hpa-ramp),
  // waiting out the write rate limit should another client have spent the key's burst.
  teardownTimeout: '15m',
};

export function setup() {
  if (SCENARIO === 'cleanup') {
    if (!__ENV.RUN_TAG) {
      throw new Error('SCENARIO=cleanup deletes the items of one run: name its tag with RUN_TAG');
    }
    return { ids: [], runTag: __ENV.RUN_TAG };
  }
  return startRun(20);
}

export default function (data) {
  if (SCENARIO !== 'cleanup') {
    sendOne(data);
  }
}

export function teardown(data) {
  itemsLeftBehind.add(cleanUp(data));
}

export function handleSummary(data) {
  if (!data.metrics.http_req_duration) {
    return { stdout: `meridian k6 ${SCENARIO}: no request was sent (see the error above)\n` };
  }
  const duration = data.metrics.http_req_duration.values;
  const failed = data.metrics.http_req_failed.values.rate;
  const requests = data.metrics.http_reqs.values;
  const writes = (data.metrics.writes_rate_limited_share || { values: { passes: 0, fails: 0 } }).values;
  const creates = writes.passes + writes.fails;
  const breached = Object.entries(data.metrics)
    .flatMap(([metric, m]) => Object.entries(m.thresholds || {})
      .filter(([, t]) => !t.ok).map(([expr]) => `${metric} ${expr}`));
  const fmt = (ms) => `${ms.toFixed(2)} ms`;
  const human = [
    `meridian k6 ${SCENARIO}: ${requests.count} requests, ${requests.rate.toFixed(1)}/s, `
      + `${(failed * 100).toFixed(2)}% failed`,
    `  creates ${creates}, rate-limited (429, not failed) ${writes.passes} `
      + `(${((creates ? writes.passes / creates : 0) * 100).toFixed(1)}%)`,
    `  latency p50 ${fmt(duration.med)}, p95 ${fmt(duration['p(95)'])}, p99 ${fmt(duration['p(99)'])}, `
      + `max ${fmt(duration.max)}`,
    ...requestNames.map((name) => {
      const m = data.metrics[`http_req_duration{name:${name}}`];
      return m ? `    ${name.padEnd(16)} p50 ${fmt(m.values.med)}, p99 ${fmt(m.values['p(99)'])}` : '';
    }).filter(Boolean),
    `  thresholds (failed < ${limits.failed * 100}%, p95 < ${limits.p95} ms, p99 < ${limits.p99} ms): `
      + (breached.length ? `BREACHED: ${breached.join('; ')}` : 'all met'),
    '',
  ].join('\n');
  const dir = __ENV.SUMMARY_DIR || '.';
  return { stdout: human, [`${dir}/summary-${SCENARIO}.json`]: JSON.stringify(data, null, 2) };
}
