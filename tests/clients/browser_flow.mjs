#!/usr/bin/env node
// Drives real headless Chromium (Debian's /usr/bin/chromium) through a list of steps with
// playwright-core (pinned in tests/peers/package.json), for Doorman's browser tests.
//
//   tests/peers/node_modules/.bin/node tests/clients/browser_flow.mjs plan.json
//
// plan.json:
//   {"artifacts": "/abs/dir for screenshots", "timeout_ms": 15000,
//    "steps": [ one object per step, run in order, each with one of these keys:
//      {"goto": URL}                        navigate the page
//      {"wait_url": PREFIX}                 wait until the page's URL starts with PREFIX (and loaded)
//      {"wait_for": SELECTOR}               wait until an element matching SELECTOR is visible
//      {"screenshot": "name.png"}           full-page screenshot into artifacts
//      {"fill": {SELECTOR: VALUE, ...}}     type into fields
//      {"click": SELECTOR}                  click (a navigation it starts is awaited by the next wait_url)
//      {"text": SELECTOR}                   the element's innerText
//      {"document_cookie": true}            what page scripts see in document.cookie
//      {"context_cookies": true}            every cookie the browser holds: name, domain, path,
//                                           httpOnly, secure, sameSite (values left out)
//      {"frame_check": URL, "screenshot": "name.png"?}
//          opens URL (a page that embeds iframes) in a second tab of the same browser (same
//          cookies), waits for it to load, and reports for each <iframe>: name, src, the URL its
//          frame ended on, whether that frame has a form or a password field, and its first text;
//          plus the console messages of that tab (Chromium logs framing refusals there).
//          `{page_url}` in URL is replaced by the main page's current URL, percent-encoded.
//    ]}
// Prints ONE JSON object on stdout: {"ok": true, "url": final URL, "steps": [result per step],
// "console": [messages]}; on failure {"ok": false, "error", "step", "url", "screenshot"} and
// exit 1 (a screenshot of the failing page is saved as failure-step<N>.png).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';

// playwright-core lives in tests/peers/node_modules, out of reach of bare specifiers from here.
import { chromium } from '../peers/node_modules/playwright-core/index.mjs';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

async function frameCheck(context, url, artifacts, screenshot, timeout) {
  const page = await context.newPage();
  const messages = [];
  page.on('console', (m) => messages.push(m.text()));
  try {
    await page.goto(url, { waitUntil: 'load', timeout });
    const frames = [];
    for (const el of await page.$$('iframe')) {
      const info = {
        name: await el.getAttribute('name'),
        src: await el.getAttribute('src'),
        url: null,
        has_form: false,
        has_password: false,
        text: null,
      };
      const frame = await el.contentFrame();
      if (frame) {
        info.url = frame.url();
        try {
          Object.assign(info, await frame.evaluate(() => ({
            has_form: document.forms.length > 0,
            has_password: document.querySelector('input[type=password]') !== null,
            text: (document.body ? document.body.innerText : '').slice(0, 300),
          })));
        } catch (e) {
          info.error = String(e.message ?? e);
        }
      }
      frames.push(info);
    }
    if (screenshot) await page.screenshot({ path: join(artifacts, screenshot), fullPage: true });
    return { frames, console: messages };
  } finally {
    await page.close();
  }
}

async function main() {
  const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));
  const timeout = plan.timeout_ms ?? 15000;
  const artifacts = plan.artifacts;
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true, timeout });
  const context = await browser.newContext({ viewport: { width: 1024, height: 768 } });
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  const consoleMessages = [];
  page.on('console', (m) => consoleMessages.push(m.text()));
  const results = [];
  let index = 0;
  try {
    for (const step of plan.steps) {
      let result = {};
      if ('frame_check' in step) {
        const target = step.frame_check.replaceAll('{page_url}', encodeURIComponent(page.url()));
        result = await frameCheck(context, target, artifacts, step.screenshot, timeout);
      } else if ('goto' in step) {
        const r = await page.goto(step.goto, { waitUntil: 'load' });
        result.status = r ? r.status() : null;
      } else if ('wait_url' in step) {
        await page.waitForURL((u) => u.href.startsWith(step.wait_url), { waitUntil: 'load' });
      } else if ('wait_for' in step) {
        await page.waitForSelector(step.wait_for, { state: 'visible' });
      } else if ('screenshot' in step) {
        await page.screenshot({ path: join(artifacts, step.screenshot), fullPage: true });
        result.path = join(artifacts, step.screenshot);
      } else if ('fill' in step) {
        for (const [selector, value] of Object.entries(step.fill)) await page.fill(selector, value);
      } else if ('click' in step) {
        await page.click(step.click);
      } else if ('text' in step) {
        result.text = await page.innerText(step.text);
      } else if ('document_cookie' in step) {
        result.document_cookie = await page.evaluate(() => document.cookie);
      } else if ('context_cookies' in step) {
        result.cookies = (await context.cookies()).map(({ value, ...c }) => c);
      } else {
        throw new Error(`unknown step ${JSON.stringify(step)}`);
      }
      result.url = page.url();
      results.push(result);
      index += 1;
    }
    process.stdout.write(`${JSON.stringify({ ok: true, url: page.url(), steps: results, console: consoleMessages })}\n`);
  } catch (e) {
    const shot = `failure-step${index}.png`;
    try {
      await page.screenshot({ path: join(artifacts, shot), fullPage: true });
    } catch {
      // the page may be gone
    }
    process.stdout.write(`${JSON.stringify({
      ok: false, error: String(e.message ?? e), step: index, url: page.url(), screenshot: join(artifacts, shot),
      steps: results, console: consoleMessages,
    })}\n`);
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}

await main();
