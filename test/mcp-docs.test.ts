import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { committedTable, README, readmeTable, toolTable } from '../scripts/tool-table.js';
import { TOOLS } from '../tools/index.js';

describe('docs/mcp.md', () => {
  it('has the tool table generated from tools/index.ts (regenerate: node --import tsx scripts/tool-table.ts --write)', () => {
    expect(committedTable()).toBe(toolTable());
  });

  it('README.md has the short tool table generated from tools/index.ts (same command)', () => {
    expect(committedTable(fs.readFileSync(README, 'utf8'))).toBe(readmeTable());
  });

  it('every tool lives in tools/<name>.ts, named for the tool', () => {
    const files = fs.readdirSync(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../tools')).filter((f) => f !== 'index.ts' && f.endsWith('.ts'));
    const expected = TOOLS.map((t) => `${t.name.replace(/^crm_/, '').replace(/_/g, '-')}.ts`);
    expect(files.sort()).toEqual(expected.sort());
  });
});
