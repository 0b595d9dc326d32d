// Helpers for the end-to-end suite: free ports, child processes that die with the test,
// waiting for a server, temporary directories. Every server listens on 127.0.0.1 only.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');

export function tollgateBinary() {
  const binary = process.env.E2E_TOLLGATE_BIN ?? join(root, 'target', 'debug', 'tollgate');
  if (!existsSync(binary)) throw new Error(`no Tollgate binary at ${binary}: run cargo build first`);
  return binary;
}

const handedOut = new Set();

/**
 * A port that was free a moment ago (the servers here take their port from a config file), and
 * never one this process handed out before: the kernel may offer a port again once its probe
 * closed, and two servers of one test given the same port would answer for each other.
 */
export async function freePort() {
  for (;;) {
    const port = await new Promise((resolve, reject) => {
      const server = createServer();
      server.on('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const { port: bound } = server.address();
        server.close(() => resolve(bound));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

export function tempDir(name) {
  return mkdtempSync(join(tmpdir(), `tollgate-e2e-${name}-`));
}

export function write(dir, name, text) {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** Requires a program, failing loudly (never skipping) when it is missing. */
export function requireProgram(path) {
  if (!existsSync(path)) throw new Error(`${path} is missing: scripts/test.sh installs it`);
  return path;
}

const children = new Set();
process.on('exit', () => { for (const child of children) child.kill('SIGKILL'); });

/** Starts a process; its output goes to the test log with a prefix. */
export function start(name, command, args, options = {}) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  children.add(child);
  let output = '';
  const log = (chunk) => {
    output = (output + chunk).slice(-4000);
    if (process.env.E2E_VERBOSE) process.stderr.write(`[${name}] ${chunk}`);
  };
  child.stdout.on('data', log);
  child.stderr.on('data', log);
  let exited = null;
  child.on('exit', (code, signal) => { exited = { code, signal }; children.delete(child); });
  return {
    child,
    get exited() { return exited; },
    get output() { return output; },
    async stop() {
      if (exited) return;
      const done = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await done;
    },
  };
}

/**
 * Waits until a Tollgate answers on both of its listeners, and is the one answering: `/healthz`
 * on the admin listener and `/ping` on the public one (no state, no check), each with 200.
 */
export async function waitForTollgate(adminOrigin, publicOrigin, server) {
  for (const url of [`${adminOrigin}/healthz`, `${publicOrigin}/ping`]) {
    await waitForHttp(url, server);
    const answer = await fetch(url);
    if (answer.status !== 200) throw new Error(`${url} answered ${answer.status}:\n${server.output}`);
  }
}

/** Polls `url` until it answers at all (any status), or throws after `attempts`. */
export async function waitForHttp(url, server, attempts = 200) {
  for (let attempt = 0; attempt < attempts; attempt += 1) {
    if (server?.exited) {
      throw new Error(`${url}: the server exited with ${JSON.stringify(server.exited)}:\n${server.output}`);
    }
    try {
      await fetch(url, { redirect: 'manual' });
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  throw new Error(`${url} never answered`);
}

export const chromiumArgs = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
