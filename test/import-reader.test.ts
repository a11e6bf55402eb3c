import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readBatches } from '../src/import-file.js';
import { phoneKey, primePhones } from '../src/services/phone.js';
import { parsePhone } from '../src/services/phone-parse.js';

// The reading half of `crm-mcp import`, on its worker thread (src/import-reader.js).

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-import-reader-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const write = (name: string, text: string) => {
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return file;
};

async function readAll(file: string, batch: number) {
  const out = [];
  for await (const b of readBatches(file, batch)) out.push(b);
  return out;
}

describe('the import reader thread', () => {
  it('reads the file in batches and parses each batch’s phone-shaped values ahead, as the service would', async () => {
    const lines = ['name,phone,zip,joined'];
    for (let i = 0; i < 7; i++) lines.push(`P${i},+1 (415) 555-01${String(i).padStart(2, '0')},7500${i},2024-01-0${i + 1}`);
    lines.push('Q,020 7946 0001,,');
    const file = write('people.csv', `${lines.join('\n')}\n`);
    const batches = await readAll(file, 3);
    expect(batches.map((b) => b.rows.length)).toEqual([3, 3, 2]);
    expect(batches.flatMap((b) => b.rows.map((r) => r.name))).toEqual(['P0', 'P1', 'P2', 'P3', 'P4', 'P5', 'P6', 'Q']);
    expect(batches.at(-1)!.bytes).toBe(fs.statSync(file).size);
    // Each batch carries its own phone-shaped values (dates included: the thread does not know the
    // schema), parsed exactly as the service parses them; postcodes of five digits too.
    const first = new Map(batches[0]!.phones);
    expect([...first.keys()].sort()).toEqual(['+1 (415) 555-0100', '+1 (415) 555-0101', '+1 (415) 555-0102', '2024-01-01', '2024-01-02', '2024-01-03', '75000', '75001', '75002']);
    for (const [v, parsed] of [...first, ...batches[2]!.phones]) expect(parsed, v).toEqual(parsePhone(v));
    expect(first.get('+1 (415) 555-0100')).toEqual({ e164: '14155550100', nationalNumber: '4155550100', nationalDigits: '4155550100' });
    expect(new Map(batches[2]!.phones).get('020 7946 0001')).toBeNull();
  });

  it('in pieces: the file’s first piece smaller, then `chunk` rows at a time, each batch’s last piece saying so', async () => {
    const lines = ['name'];
    for (let i = 0; i < 23; i++) lines.push(`P${i}`);
    const file = write('pieces.csv', `${lines.join('\n')}\n`);
    const pieces = [];
    for await (const b of readBatches(file, 10, 4, 2)) pieces.push([b.rows.length, b.last]);
    expect(pieces).toEqual([
      [2, false],
      [4, false],
      [4, true],
      [4, false],
      [4, false],
      [2, true],
      [3, true],
    ]);
  });

  it('the service uses the primed readings (and parses for itself what was not primed)', () => {
    primePhones([['+1 415 555 0199', { e164: '1', nationalNumber: 'primed', nationalDigits: '1' }]]);
    expect(phoneKey('+1 415 555 0199')).toBe('primed');
    primePhones([]);
    expect(phoneKey('+1 415 555 0199')).toBe('4155550199');
  });

  it('JSON Lines, a JSON list and {"records": [...]}', async () => {
    const jsonl = write('a.jsonl', '{"name":"A","phone":"+33 1 42 68 53 00"}\n\nnot json\n{"name":"B"}\n');
    const rows = (await readAll(jsonl, 10)).flatMap((b) => b.rows);
    expect(rows).toEqual([{ name: 'A', phone: '+33 1 42 68 53 00' }, { __parse_error: 'line 3 is not valid JSON' }, { name: 'B' }]);
    expect((await readAll(write('a.json', '[{"name":"A"},{"name":"B"},{"name":"C"}]'), 2)).map((b) => b.rows.length)).toEqual([2, 1]);
    expect((await readAll(write('b.json', '{"records":[{"name":"A"}]}'), 2)).flatMap((b) => b.rows)).toEqual([{ name: 'A' }]);
  });

  it('a broken CSV line after some batches: the batches read before it arrive, then a validation error', async () => {
    // Past the first read chunks of the file (64 KiB each): rows parsed from them are sent first.
    const lines = ['name,title'];
    for (let i = 0; i < 5000; i++) lines.push(`Person number ${i},Title number ${i}`);
    lines.push('Broken,"Love"lace');
    const got: number[] = [];
    const run = async () => {
      for await (const b of readBatches(write('broken.csv', `${lines.join('\n')}\n`), 1000)) got.push(b.rows.length);
    };
    await expect(run()).rejects.toMatchObject({ code: 'VALIDATION_ERROR', message: expect.stringMatching(/[Qq]uote/) });
    expect(got.length).toBeGreaterThan(0);
    expect(got.every((n) => n === 1000)).toBe(true);
  });

  it('stopping early ends the thread (no hang), and a missing file is an error', async () => {
    const lines = ['name'];
    for (let i = 0; i < 5000; i++) lines.push(`P${i}`);
    const file = write('long.csv', `${lines.join('\n')}\n`);
    let seen = 0;
    for await (const b of readBatches(file, 100)) {
      seen += b.rows.length;
      break;
    }
    expect(seen).toBe(100);
    await expect(readAll(path.join(dir, 'nope.csv'), 10)).rejects.toThrow(/ENOENT/);
  });
});
