import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { parse } from 'csv-parse';
import { stringify } from 'csv-stringify/sync';
import cliProgress from 'cli-progress';
import type { Ctx } from './services/context.js';
import { validationError } from './services/errors.js';
import { importDetailed, neutralize } from './services/import-export.js';
import { resolveObject, type ObjectDef } from './services/schema.js';

/**
 * `crm-mcp import <object> <file>`: streams a CSV, JSON or JSON Lines file of any size through the
 * import service in batches (validation and duplicate detection on), shows progress, writes the
 * rejected rows with their reasons next to the file, and prints a summary. Safe to re-run: rows
 * that already exist are recognised as duplicates and skipped.
 */

export interface FileImportOptions {
  object: string;
  file: string;
  /** "Header=field,Other header=field" */
  map?: string | undefined;
  batch?: number | undefined;
  rejects?: string | undefined;
  /** Progress bar on a terminal, plain lines otherwise. */
  tty?: boolean | undefined;
  out?: NodeJS.WritableStream;
}

export interface FileImportSummary {
  object: string;
  file: string;
  rows: number;
  created: number;
  duplicates: number;
  failed: number;
  seconds: number;
  rows_per_second: number;
  rejects_file: string | null;
  ignored_columns: string[];
}

const norm = (s: string) => s.trim().toLowerCase().replace(/[\s\-./]+/g, '_');
/** "E-mail", "e mail" and "email" are the same header. */
const squash = (s: string) => s.toLowerCase().replace(/[^\p{L}\p{N}]/gu, '');

/** Header -> field name: --map first, then field name, then label, then a normalised form. */
export function headerMapping(obj: ObjectDef, headers: string[], map?: string): { mapping: Map<string, string>; ignored: string[] } {
  const explicit = new Map<string, string>();
  for (const pair of (map ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const eq = pair.lastIndexOf('=');
    if (eq < 1) throw validationError(`--map takes "Header=field" pairs separated by commas; got '${pair}'`);
    const field = pair.slice(eq + 1).trim();
    if (!obj.byName.has(field) && !isNameHelper(obj, field))
      throw validationError(`--map: '${field}' is not a field of ${obj.name}. Fields: ${obj.fields.filter((f) => !f.readOnly).map((f) => f.name).join(', ')}`);
    explicit.set(pair.slice(0, eq).trim(), field);
  }
  const mapping = new Map<string, string>();
  const ignored: string[] = [];
  for (const h of headers) {
    const byMap = explicit.get(h);
    const f =
      byMap ??
      obj.fields.find((x) => !x.readOnly && x.name === h)?.name ??
      obj.fields.find((x) => !x.readOnly && x.label.toLowerCase() === h.trim().toLowerCase())?.name ??
      obj.fields.find((x) => !x.readOnly && x.name === norm(h))?.name ??
      obj.fields.find((x) => !x.readOnly && (squash(x.name) === squash(h) || squash(x.label) === squash(h)))?.name ??
      (isNameHelper(obj, norm(h)) ? norm(h) : undefined);
    if (f) mapping.set(h, f);
    else ignored.push(h);
  }
  return { mapping, ignored };
}

/** company_name and the like: resolved to the related record by the import service. */
function isNameHelper(obj: ObjectDef, name: string): boolean {
  const m = /^(.+)_name$/.exec(name);
  return !!m && obj.byName.get(m[1]!)?.type === 'RELATION';
}

function toRecord(obj: ObjectDef, raw: Record<string, unknown>, mapping: Map<string, string>): Record<string, unknown> {
  const r: Record<string, unknown> = {};
  for (const [h, field] of mapping) {
    const v = raw[h];
    if (v === undefined || v === null || v === '') continue;
    const f = obj.byName.get(field);
    r[field] = f?.type === 'MULTI_SELECT' && typeof v === 'string' ? v.split(/[;,]/).map((s) => s.trim()).filter(Boolean) : v;
  }
  return r;
}

async function* readRows(file: string, onBytes: (n: number) => void): AsyncGenerator<Record<string, unknown>> {
  const ext = path.extname(file).toLowerCase();
  if (ext === '.json') {
    const data = JSON.parse(await fs.promises.readFile(file, 'utf8')) as unknown;
    const list = Array.isArray(data) ? data : (data as { records?: unknown }).records;
    if (!Array.isArray(list)) throw validationError(`${file}: expected a JSON array of records (or {"records": [...]})`);
    onBytes(fs.statSync(file).size);
    for (const r of list) yield r as Record<string, unknown>;
    return;
  }
  const stream = fs.createReadStream(file);
  stream.on('data', (chunk) => onBytes(chunk.length));
  if (ext === '.jsonl' || ext === '.ndjson') {
    let line = 0;
    for await (const text of readline.createInterface({ input: stream, crlfDelay: Infinity })) {
      line++;
      if (!text.trim()) continue;
      try {
        yield JSON.parse(text) as Record<string, unknown>;
      } catch {
        yield { __parse_error: `line ${line} is not valid JSON` };
      }
    }
    return;
  }
  if (ext !== '.csv' && ext !== '.txt') throw validationError(`Unsupported file type '${ext}': use .csv, .json, .jsonl or .ndjson`);
  yield* stream.pipe(parse({ columns: true, bom: true, trim: true, skip_empty_lines: true, relax_column_count: true }));
}

export async function importFile(ctx: Ctx, opts: FileImportOptions): Promise<FileImportSummary> {
  const obj = await resolveObject(ctx, opts.object);
  if (!fs.existsSync(opts.file)) throw validationError(`No such file: ${opts.file}`);
  const batchSize = opts.batch ?? 5000;
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 5000) throw validationError('--batch must be 1 to 5000');
  const size = fs.statSync(opts.file).size;
  const t0 = performance.now();
  const s = { rows: 0, created: 0, duplicates: 0, failed: 0 };
  let bytes = 0;
  // --map is checked before the first row; each column is mapped the first time it is seen (JSON
  // records need not all have the same keys, and a broken first line must not leave the rest unmapped).
  const mapping = headerMapping(obj, [], opts.map).mapping;
  const ignored: string[] = [];
  const columns: string[] = [];
  const known = new Set<string>();
  const rejectsPath = opts.rejects ?? `${opts.file}.rejected.csv`;
  let rejects: fs.WriteStream | null = null;
  let rejectHeaders: string[] | null = null;

  const bar = opts.tty ? new cliProgress.SingleBar({ format: 'import {bar} {percentage}% | {rows} rows | {rate} rows/s | ETA {eta_formatted}', hideCursor: true, stream: process.stderr }, cliProgress.Presets.shades_classic) : null;
  bar?.start(size || 1, 0, { rows: 0, rate: 0 });
  let lastLine = 0;
  const progress = (final = false) => {
    const secs = (performance.now() - t0) / 1000;
    const rate = Math.round(s.rows / Math.max(secs, 0.001));
    if (bar) bar.update(Math.min(bytes, size), { rows: s.rows, rate });
    else if (final || performance.now() - lastLine > 1000) {
      lastLine = performance.now();
      process.stderr.write(`import: ${s.rows} rows, ${s.created} created, ${s.duplicates} duplicates, ${s.failed} failed, ${rate} rows/s${size ? `, ${Math.round((100 * Math.min(bytes, size)) / size)}%` : ''}\n`);
    }
  };

  let batch: { raw: Record<string, unknown>; rec: Record<string, unknown> }[] = [];
  const flush = async () => {
    if (!batch.length) return;
    const r = await importDetailed(ctx, obj.name, batch.map((b) => b.rec), batchSize);
    s.created += r.created;
    s.duplicates += r.duplicates;
    s.failed += r.failed;
    for (const row of r.rows) {
      if (row.status !== 'failed') continue;
      const raw = batch[row.index]!.raw;
      if (!rejects) {
        rejects = fs.createWriteStream(rejectsPath);
        rejectHeaders = [...columns, '_error'];
        rejects.write(stringify([rejectHeaders]));
      }
      // The rejects file is opened in spreadsheets too: neutralise formulas there as well.
      rejects.write(stringify([rejectHeaders!.map((h) => neutralize(h === '_error' ? row.reason : String(raw[h] ?? '')))], { quoted_match: /[\r\n]/ }));
    }
    batch = [];
    progress();
  };

  // Large transactions one after another: the write-ahead log is checkpointed at the end, not after each.
  await ctx.db.bulk(async () => {
    for await (const raw of readRows(opts.file, (n) => (bytes += n))) {
      const fresh = Object.keys(raw).filter((k) => k !== '__parse_error' && !known.has(k));
      if (fresh.length) {
        const more = headerMapping(obj, fresh, opts.map);
        for (const [h, f] of more.mapping) mapping.set(h, f);
        ignored.push(...more.ignored);
        columns.push(...fresh);
        fresh.forEach((k) => known.add(k));
      }
      s.rows++;
      const rec = typeof raw.__parse_error === 'string' ? { __error: raw.__parse_error } : toRecord(obj, raw, mapping);
      batch.push({ raw, rec });
      if (batch.length >= batchSize) await flush();
    }
    await flush();
  });
  await ctx.db.adapter.analyze(ctx.db.kysely as never, s.created > 10_000);
  progress(true);
  bar?.stop();
  if (rejects) await new Promise<void>((resolve) => (rejects as unknown as fs.WriteStream).end(resolve));
  const seconds = (performance.now() - t0) / 1000;
  return {
    object: obj.name,
    file: opts.file,
    ...s,
    seconds: Math.round(seconds * 100) / 100,
    rows_per_second: Math.round(s.rows / Math.max(seconds, 0.001)),
    rejects_file: rejects ? rejectsPath : null,
    ignored_columns: ignored,
  };
}
