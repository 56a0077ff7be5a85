// Load during a rolling restart (scripts/cluster.sh test, the drain assertion): a constant rate
// of reads through the Gateway, and not one may fail. DURATION (e.g. 120s), RATE (default 30/s).
// scripts/cluster.sh runs it with a --config whose `hosts` maps the Gateway's name to kind's
// port mapping, so TLS checks that name.
import http from 'k6/http';
import { check } from 'k6';

const base = __ENV.ITEMS_URL;

export const options = {
  scenarios: {
    drain: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 30),
      timeUnit: '1s',
      duration: __ENV.DURATION || '120s',
      preAllocatedVUs: 20,
      maxVUs: 100,
    },
  },
  thresholds: {
    http_req_failed: ['rate==0'],
    checks: ['rate==1'],
  },
};

export default function () {
  const greeting = http.get(`${base}/v1/greeting?tz=Europe/Paris`, { tags: { name: 'greeting' } });
  check(greeting, { 'greeting 200': (r) => r.status === 200 });
  const list = http.get(`${base}/v1/items?limit=5`, { tags: { name: 'list' } });
  check(list, { 'list 200': (r) => r.status === 200 });
}
