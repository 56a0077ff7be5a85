// A realistic mix of traffic over both services, at a constant arrival rate, for a bounded
// time. Used by observability/verify.sh to give Prometheus something to scrape.
//   k6 run --no-usage-report -e ITEMS_URL=http://127.0.0.1:8080 -e TIMEZONES_URL=... traffic.js
import http from 'k6/http';
import { check } from 'k6';

const ITEMS = __ENV.ITEMS_URL || 'http://127.0.0.1:8080';
const TIMEZONES = __ENV.TIMEZONES_URL || 'http://127.0.0.1:8081';
const API_KEY = __ENV.API_KEY || 'local-dev-api-key-change-me';

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

const zones = ['Europe/Paris', 'Asia/Tokyo', 'America/New_York', 'Australia/Sydney'];

export default function () {
  const zone = zones[Math.floor(Math.random() * zones.length)];
  const pick = Math.random();
  let response;
  if (pick < 0.25) {
    response = http.get(`${ITEMS}/v1/items?limit=10`, { tags: { name: 'list items' } });
  } else if (pick < 0.45) {
    response = http.get(`${ITEMS}/v1/items?limit=5&tz=${zone}`, { tags: { name: 'list items ?tz' } });
  } else if (pick < 0.6) {
    response = http.post(
      `${ITEMS}/v1/items`,
      JSON.stringify({ name: `k6 ${__VU}-${__ITER}`, tags: ['k6'] }),
      { headers: { 'Content-Type': 'application/json', 'X-API-Key': API_KEY }, tags: { name: 'create item' } },
    );
  } else if (pick < 0.8) {
    response = http.get(`${ITEMS}/v1/greeting?tz=${zone}`, { tags: { name: 'greeting ?tz' } });
  } else {
    response = http.get(`${TIMEZONES}/v1/timezones/${zone}`, { tags: { name: 'zone detail' } });
  }
  check(response, { 'answered': (r) => r.status > 0 });
}
