// The traffic mix both load scripts send: reads with and without `?tz=` (which cross the
// items → timezones hop), writes with the API key, and timezone lookups. Each request is
// tagged with a `name`, so summaries and thresholds can be read per endpoint.
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Rate } from 'k6/metrics';

export const target = {
  items: __ENV.ITEMS_URL || 'http://127.0.0.1:8080',
  timezones: __ENV.TIMEZONES_URL || 'http://127.0.0.1:8081',
  apiKey: __ENV.API_KEY || 'local-dev-api-key-change-me',
};

const zones = ['Europe/Paris', 'Asia/Tokyo', 'America/New_York', 'Australia/Sydney', 'America/Sao_Paulo'];
const writeHeaders = { 'Content-Type': 'application/json', 'X-API-Key': target.apiKey };

// items limits each API key's writes per pod (WRITE_RATE_PER_SECOND, WRITE_BURST), and the
// whole run writes with one key: past the limit, a create is answered 429 with Retry-After.
// That is the limit doing its job, not a failed request, so a create's 429 is an expected
// status (left out of http_req_failed) and counted on its own. Only on a write: a read
// answered 429, or any 5xx, still fails.
const writeAnswers = http.expectedStatuses({ min: 200, max: 399 }, 429);
const writesRateLimited = new Counter('writes_rate_limited');
const writesRateLimitedShare = new Rate('writes_rate_limited_share');
// A 429 without Retry-After is not the write limit's answer (that always says when to retry):
// meridian.js fails the run on one.
const writesRateLimitedUnexplained = new Counter('writes_rate_limited_without_retry_after');

// Records a create's answer; true when it was the write limit's 429.
function recordWrite(response) {
  const limited = response.status === 429;
  writesRateLimitedShare.add(limited);
  if (limited) {
    writesRateLimited.add(1);
    const explained = check(response, {
      'rate-limited write says when to retry': (r) => Number(r.headers['Retry-After']) >= 1,
    });
    if (!explained) {
      writesRateLimitedUnexplained.add(1);
    }
  }
  return limited;
}

// Items to read by id, created once per run (k6 `setup()`). With faults injected, some
// creates fail: those are retried, a bounded number of times in all; a 429 is waited out. The
// run's items carry a tag of their own, so it can delete exactly what it created; made here,
// once, because init code runs once per VU and each would pick another. RUN_TAG names the tag
// instead: `SCENARIO=cleanup RUN_TAG=<tag>` deletes what an interrupted run left behind.
export function startRun(count) {
  const runTag = __ENV.RUN_TAG || `k6-run-${Date.now().toString(36)}`;
  const ids = [];
  for (let attempt = 0; ids.length < count && attempt < count * 10; attempt += 1) {
    // One Idempotency-Key per item wanted, reused with the same body when that create is
    // retried: a create that succeeded but whose answer was lost is answered again, not doubled.
    const n = ids.length;
    const response = http.post(`${target.items}/v1/items`,
      JSON.stringify({ name: `seed ${n}`, tags: ['k6', runTag] }),
      {
        headers: { ...writeHeaders, 'Idempotency-Key': `${runTag}-seed-${n}` },
        responseCallback: writeAnswers,
      });
    if (recordWrite(response)) {
      sleep(Number(response.headers['Retry-After'] || 1));
    } else if (response.status === 201) {
      ids.push(response.json('id'));
    }
  }
  if (ids.length === 0) {
    throw new Error(`seeding items failed: no create answered 201 in ${count * 10} attempts`);
  }
  return { ids, runTag };
}

// Deletes every item the run created (k6 `teardown()`), however many: `DELETE
// /v1/items?tag=<run tag>` removes up to 1,000 a request, repeated until one answers 0, waiting
// out the write rate limit's Retry-After (each request is one write). Bounded, so a broken
// service cannot keep it going: the time by meridian.js's teardownTimeout, the requests here
// (the bound is a billion items). Returns how many of the run's items are left (0 when the
// cleanup finished; at most a page's worth is counted).
export function cleanUp({ runTag }, maxRequests = 1000000) {
  for (let requests = 0; requests < maxRequests; requests += 1) {
    const response = http.del(`${target.items}/v1/items?tag=${runTag}&limit=1000`, null, {
      headers: writeHeaders,
      tags: { name: 'cleanup' },
      // A 429 is waited out: the write limit, not a failed request.
      responseCallback: http.expectedStatuses(200, 429),
    });
    if (response.status === 429) {
      sleep(Number(response.headers['Retry-After'] || 1));
    } else if (response.status !== 200 || response.json('deleted') === 0) {
      break;
    }
  }
  const left = http.get(`${target.items}/v1/items?tag=${runTag}&limit=100`, { tags: { name: 'cleanup' } });
  if (left.status !== 200) {
    // Unknown is not zero: count one, so the run cannot pass on a cleanup nobody could check.
    console.error(`cleanup: listing ${runTag}'s items answered ${left.status || left.error}`);
    return 1;
  }
  return (left.json('items') || []).length;
}

// [weight, name, (ids, zone) => [method, url], service called]: mostly reads, a tenth writes,
// a fifth straight to timezones. TIMEZONES_URL=none leaves out the direct timezones calls, for
// a deployed environment where timezones has no public route: then only items reaches it.
const everyRequest = [
  [20, 'item by id', (ids) => ['GET', `${target.items}/v1/items/${pick(ids)}`]],
  [15, 'item by id ?tz', (ids, zone) => ['GET', `${target.items}/v1/items/${pick(ids)}?tz=${zone}`]],
  [15, 'list items', () => ['GET', `${target.items}/v1/items?limit=10`]],
  [10, 'list items ?tz', (ids, zone) => ['GET', `${target.items}/v1/items?limit=10&tz=${zone}`]],
  [10, 'greeting ?tz', (ids, zone) => ['GET', `${target.items}/v1/greeting?tz=${zone}`]],
  [10, 'create item', () => ['POST', `${target.items}/v1/items`]],
  [12, 'zone detail', (ids, zone) => ['GET', `${target.timezones}/v1/timezones/${zone}`], 'timezones'],
  [8, 'convert', (ids, zone) => ['GET', `${target.timezones}/v1/convert?to=${zone}&at=2026-03-29T01:30:00Z`], 'timezones'],
];
const requests = target.timezones === 'none'
  ? everyRequest.filter(([, , , service]) => service !== 'timezones')
  : everyRequest;
const totalWeight = requests.reduce((sum, [weight]) => sum + weight, 0);

// Every request name this run sends, for per-endpoint thresholds and summaries.
export const requestNames = requests.map(([, name]) => name);

function pick(list) {
  return list[Math.floor(Math.random() * list.length)];
}

export function sendOne({ ids, runTag }) {
  let roll = Math.random() * totalWeight;
  const [, name, build] = requests.find(([weight]) => (roll -= weight) < 0) || requests[0];
  const [method, url] = build(ids, pick(zones));
  const response = method === 'POST'
    ? http.post(url, JSON.stringify({ name: `k6 ${__VU}-${__ITER}`, tags: ['k6', runTag] }), {
      // A key per create (the run's tag makes it unique across runs); these are not retried.
      headers: { ...writeHeaders, 'Idempotency-Key': `${runTag}-${__VU}-${__ITER}` },
      tags: { name },
      responseCallback: writeAnswers,
    })
    : http.get(url, { tags: { name } });
  if (!(method === 'POST' && recordWrite(response))) {
    check(response, { 'status is 2xx': (r) => r.status >= 200 && r.status < 300 });
  }
  return response;
}
