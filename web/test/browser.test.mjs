// The demo page in Debian's chromium (playwright-core, no downloaded browser): a question is
// typed, the opener must be shown before the continuation, the timeline must be drawn, a second
// turn must work (multi-turn), and a phone-sized screenshot is saved to web/test/out/handoff.png.
//   node web/test/browser.test.mjs      (after scripts/setup-browser.sh and cargo build --release -p ulm)
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const bin = process.env.ULM_BIN || join(root, 'target/release/ulm');
const out = join(here, 'out');
const CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'];
const TIMEOUT_MS = 180_000;

let passed = 0;
let failed = 0;
function check(ok, what) {
  if (ok) { passed++; console.log(`ok - ${what}`); } else { failed++; console.log(`not ok - ${what}`); }
}

// `ulm serve` on a free port, with cloud-like latency so that the wait for the cloud shows.
function startServer() {
  return new Promise((resolve, reject) => {
    const args = ['serve', '--port', '0', '--ctx', '1024', '--ttft-ms', '700', '--tokens-per-s', '30'];
    const p = spawn(bin, args, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
    let buf = '';
    const timer = setTimeout(() => reject(new Error('ulm serve did not print its URL in 60 s')), 60_000);
    p.stdout.on('data', (d) => {
      buf += d;
      const m = buf.match(/listening on (http:\/\/\S+?)\/?\s/);
      if (m) { clearTimeout(timer); resolve({ proc: p, url: m[1] }); }
    });
    p.on('exit', (code) => reject(new Error(`ulm serve exited with ${code}`)));
  });
}

async function ask(page, text, n) {
  await page.fill('#question', text);
  await page.press('#question', 'Enter');
  const reply = page.locator('.msg.assistant').nth(n - 1);
  await reply.locator('span.opener').filter({ hasText: /\S/ }).waitFor({ timeout: TIMEOUT_MS });
  await page.waitForFunction((i) => {
    const el = document.querySelectorAll('.msg.assistant')[i];
    return el && el.classList.contains('done');
  }, n - 1, { timeout: TIMEOUT_MS });
  return reply;
}

const server = await startServer();
console.log(`# ulm serve at ${server.url}`);
let browser;
try {
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_FLAGS });
  const page = await browser.newPage({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2 });
  await page.addInitScript(() => { localStorage.setItem('ulm.max-tokens', '48'); localStorage.setItem('ulm.words', '6'); });
  await page.goto(server.url + '/');
  await page.locator('#models b.edge').waitFor({ timeout: 10_000 });

  const reply = await ask(page, 'What is a good way to start learning to cook?', 1);
  const d = await reply.evaluate((el) => ({
    opener: el.querySelector('span.opener').textContent,
    cont: el.querySelector('span.continuation').textContent,
    openerAt: Number(el.dataset.openerAt),
    contAt: Number(el.dataset.continuationAt),
    timeline: el.dataset.timeline,
    segs: el.querySelectorAll('.timeline rect.seg').length,
    legend: el.querySelector('.legend').textContent,
    mode: el.dataset.mode || '',
  }));
  console.log(`# opener ${JSON.stringify(d.opener)} at ${d.openerAt} ms, continuation at ${d.contAt} ms: ${JSON.stringify(d.cont.slice(0, 80))}`);
  console.log(`# legend: ${d.legend}`);
  check(d.opener.trim().length > 0, 'the opener is shown');
  check(d.cont.trim().length > 0, 'the continuation is shown');
  check(d.openerAt < d.contAt, 'the opener is shown before the continuation');
  check(d.timeline === 'drawn' && d.segs >= 3, `the timeline is drawn (${d.segs} segments)`);
  check(/first word \d+ ms/.test(d.legend) && /cloud TTFT \d+ ms/.test(d.legend), 'time to first word and cloud TTFT are shown');
  check(d.mode.length > 0, `the recovery mode is shown (${d.mode})`);

  const second = await ask(page, 'And what should I cook first?', 2);
  const n = await page.locator('.msg').count();
  check(n === 4 && (await second.locator('span.opener').textContent()).trim().length > 0, 'a second turn is answered (multi-turn history)');

  mkdirSync(out, { recursive: true });
  const shot = join(out, 'handoff.png');
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`# screenshot: ${shot}`);
} catch (e) {
  failed++;
  console.log(`not ok - ${e.message}`);
} finally {
  if (browser) await browser.close();
  server.proc.kill('SIGTERM');
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
