import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Tests that spawn the CLI (`crm-mcp stdio`, import, seed, token) run the build in dist/. Rebuild it
 * once, before any test file starts, when a source is newer than it (or it is missing); a failing
 * build fails the run with tsc's output. Once here, not per file: parallel files would otherwise
 * rebuild dist at the same time.
 */
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(root, 'dist/src/cli.js');

function newest(dir: string): number {
  let t = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : fs.statSync(p).mtimeMs);
  }
  return t;
}

export function setup(): void {
  const stale = !fs.existsSync(CLI) || Math.max(newest(path.join(root, 'src')), newest(path.join(root, 'tools'))) > fs.statSync(CLI).mtimeMs;
  if (!stale) return;
  const r = spawnSync('npm', ['run', 'build'], { cwd: root, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`npm run build failed:\n${r.stdout}\n${r.stderr}`);
}
