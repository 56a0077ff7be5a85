// Swagger UI as a user uses it: headless Chromium opens items' /docs, expands "GET
// /v1/items/{id}", presses "Try it out", types an id, presses "Execute" and waits for the
// live response. Passes only on a 200 whose body is that item; saves a screenshot either way.
// Usage: node try-it-out.mjs ITEMS_URL ITEM_ID SCREENSHOT_PATH   (scripts/swagger-ui-test.sh)
import { chromium } from 'playwright-core';

const [itemsUrl, itemId, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run'],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
// Nothing but the service under test: Swagger UI must work with no CDN or other host.
const foreign = [];
await page.route('**/*', (route) => {
  const url = route.request().url();
  if (url.startsWith(itemsUrl) || url.startsWith('data:')) return route.continue();
  foreign.push(url);
  return route.abort();
});
let failure;
try {
  await page.goto(`${itemsUrl}/docs`);
  const operation = page.locator('.opblock-get').filter({
    has: page.locator('.opblock-summary-path[data-path="/v1/items/{id}"]'),
  });
  await operation.locator('.opblock-summary').click();
  await operation.locator('button.try-out__btn').click();
  await operation.locator('tr[data-param-name="id"] input').fill(itemId);
  await operation.locator('button.execute').click();
  const status = operation.locator('.live-responses-table .response .response-col_status');
  await status.waitFor({ timeout: 15000 });
  // The screenshot shows the operation with its live response.
  await operation.locator('.live-responses-table').scrollIntoViewIfNeeded();
  await page.evaluate(() => window.scrollBy(0, -400));
  const code = (await status.innerText()).trim();
  const body = await operation.locator('.live-responses-table .response-col_description pre').first().innerText();
  if (code !== '200') failure = `Swagger UI showed status ${code}, not 200: ${body}`;
  else if (!body.includes(itemId)) failure = `the 200 body does not show item ${itemId}: ${body}`;
  else console.log(`Swagger UI: GET /v1/items/{id} via "Try it out" answered 200 with item ${itemId}`);
  if (foreign.length) failure = `the page tried other hosts: ${foreign.join(', ')}`;
} catch (error) {
  failure = `Swagger UI flow failed: ${error.message}`;
} finally {
  await page.screenshot({ path: screenshot, fullPage: false });
  await browser.close();
}
console.log(`screenshot: ${screenshot}`);
if (failure) {
  console.error(failure);
  process.exit(1);
}
