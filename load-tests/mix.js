// The traffic mix both load scripts send: reads with and without `?tz=` (which cross the
// items → timezones hop), writes with the API key, and timezone lookups. Each request is
// tagged with a `name`, so summaries and thresholds can be read per endpoint.
import http from 'k6/http';
import { check } from 'k6';

export const target = {
  items: __ENV.ITEMS_URL || 'http://127.0.0.1:8080',
  timezones: __ENV.TIMEZONES_URL || 'http://127.0.0.1:8081',
  apiKey: __ENV.API_KEY || 'local-dev-api-key-change-me',
};

const zones = ['Europe/Paris', 'Asia/Tokyo', 'America/New_York', 'Australia/Sydney', 'America/Sao_Paulo'];
const writeHeaders = { 'Content-Type': 'application/json', 'X-API-Key': target.apiKey };

// Items to read by id, created once per run (k6 `setup()`).
export function seedItems(count) {
  const ids = [];
  for (let i = 0; i < count; i += 1) {
    const response = http.post(`${target.items}/v1/items`,
      JSON.stringify({ name: `seed ${i}`, tags: ['k6', 'seed'] }), { headers: writeHeaders });
    if (response.status !== 201) {
      throw new Error(`seeding items failed: ${response.status} ${response.body}`);
    }
    ids.push(response.json('id'));
  }
  return ids;
}

// Weights sum to 100: mostly reads, a tenth writes, a fifth straight to timezones.
const requests = [
  [20, (ids, zone) => ['GET', `${target.items}/v1/items/${pick(ids)}`, 'item by id']],
  [15, (ids, zone) => ['GET', `${target.items}/v1/items/${pick(ids)}?tz=${zone}`, 'item by id ?tz']],
  [15, () => ['GET', `${target.items}/v1/items?limit=10`, 'list items']],
  [10, (ids, zone) => ['GET', `${target.items}/v1/items?limit=10&tz=${zone}`, 'list items ?tz']],
  [10, (ids, zone) => ['GET', `${target.items}/v1/greeting?tz=${zone}`, 'greeting ?tz']],
  [10, () => ['POST', `${target.items}/v1/items`, 'create item']],
  [12, (ids, zone) => ['GET', `${target.timezones}/v1/timezones/${zone}`, 'zone detail']],
  [8, (ids, zone) => ['GET', `${target.timezones}/v1/convert?to=${zone}&at=2026-03-29T01:30:00Z`, 'convert']],
];

// Every request name, for per-endpoint thresholds and summaries.
export const requestNames = requests.map(([, build]) => build(['id'], 'UTC')[2]);

function pick(list) {
  return list[Math.floor(Math.random() * list.length)];
}

export function sendOne(ids) {
  let roll = Math.random() * 100;
  const [, build] = requests.find(([weight]) => (roll -= weight) < 0) || requests[0];
  const [method, url, name] = build(ids, pick(zones));
  const response = method === 'POST'
    ? http.post(url, JSON.stringify({ name: `k6 ${__VU}-${__ITER}`, tags: ['k6'] }),
      { headers: writeHeaders, tags: { name } })
    : http.get(url, { tags: { name } });
  check(response, { 'status is 2xx': (r) => r.status >= 200 && r.status < 300 });
  return response;
}
