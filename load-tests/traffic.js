// The traffic mix of load-tests/mix.js at a constant arrival rate for a bounded time, with no
// thresholds: observability/verify.sh runs it with faults injected, to give Prometheus
// something to scrape (errors included).
//   k6 run --no-usage-report -e ITEMS_URL=http://127.0.0.1:8080 -e TIMEZONES_URL=... traffic.js
import { sendOne, startRun } from './mix.js';

export const options = {
  scenarios: {
    mixed: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 50),
      timeUnit: '1s',
      duration: __ENV.DURATION || '20s',
      preAllocatedVUs: 20,
      maxVUs: 100,
    },
  },
};

// The items it creates stay: the dashboards' item count should have something to show.
export function setup() {
  return startRun(10);
}

export default function (data) {
  sendOne(data);
}
