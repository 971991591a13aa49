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
//      {"axe": NAME}                        runs axe-core (tests/peers) on the page; writes
//                                           axe-NAME.json into artifacts; returns the violations
//                                           (id, impact, help, first targets)
//      {"press": KEY | [KEY, ...]}          keyboard presses ("Tab", "Enter", "Space"...)
//      {"type": TEXT}                       types into the focused element
//      {"tab_to": SELECTOR, "max": N}       presses Tab (at most N times, 30 by default) until the
//                                           focused element matches SELECTOR; fails otherwise
//      {"focused": true}                    what has the keyboard focus: tag, name, type, text
//      {"frame_check": URL, "screenshot": "name.png"?}
//          opens URL (a page that embeds iframes) in a second tab of the same browser (same
//          cookies), waits for it to load, and reports for each <iframe>: name, src, the URL its
//          frame ended on, whether that frame has a form or a password field, and its first text;
//          plus the console messages of that tab (Chromium logs framing refusals there).
//          `{page_url}` in URL is replaced by the main page's current URL, percent-encoded.
//    ]}
//  "profile": "/abs/dir" (optional): a browser profile kept across runs (cookies survive, as in a
//   person's browser between two visits).
// Prints ONE JSON object on stdout: {"ok": true, "url": final URL, "steps": [result per step],
// "console": [messages]}; on failure {"ok": false, "error", "step", "url", "screenshot"} and
// exit 1 (a screenshot of the failing page is saved as failure-step<N>.png).

import { readFileSync, writeFileSync } from 'node:fs';
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

const AXE = readFileSync(new URL('../peers/node_modules/axe-core/axe.min.js', import.meta.url), 'utf8');

// axe-core runs through the DevTools protocol (page.evaluate), which the pages' CSP
// (`default-src 'none'`, no scripts) does not govern; the pages themselves stay as served.
async function runAxe(page, name, artifacts) {
  await page.evaluate(AXE);
  const violations = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length,
      targets: v.nodes.slice(0, 5).map((n) => n.target.join(' ')),
    }));
  });
  writeFileSync(join(artifacts, `axe-${name}.json`), JSON.stringify({ url: page.url(), violations }, null, 1));
  return { violations };
}

async function focused(page) {
  return page.evaluate(() => {
    const el = document.activeElement;
    if (!el || el === document.body) return null;
    return {
      tag: el.tagName.toLowerCase(), name: el.getAttribute('name'), type: el.getAttribute('type'),
      value: el.getAttribute('value'), text: (el.innerText || '').slice(0, 80),
    };
  });
}

async function main() {
  const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));
  const timeout = plan.timeout_ms ?? 15000;
  const artifacts = plan.artifacts;
  let browser = null;
  let context;
  if (plan.profile) {
    context = await chromium.launchPersistentContext(plan.profile, {
      executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true, timeout, viewport: { width: 1024, height: 768 },
    });
  } else {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true, timeout });
    context = await browser.newContext({ viewport: { width: 1024, height: 768 } });
  }
  const page = context.pages()[0] ?? await context.newPage();
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
      } else if ('axe' in step) {
        result = await runAxe(page, step.axe, artifacts);
      } else if ('press' in step) {
        for (const key of [].concat(step.press)) await page.keyboard.press(key);
      } else if ('type' in step) {
        await page.keyboard.type(step.type);
      } else if ('tab_to' in step) {
        let reached = false;
        for (let i = 0; i < (step.max ?? 30) && !reached; i += 1) {
          await page.keyboard.press('Tab');
          reached = await page.evaluate((sel) => document.activeElement?.matches(sel) ?? false, step.tab_to);
          result.presses = i + 1;
        }
        if (!reached) throw new Error(`Tab never reached ${step.tab_to}`);
      } else if ('focused' in step) {
        result.focused = await focused(page);
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
    if (browser) await browser.close();
    else await context.close();
  }
}

await main();
