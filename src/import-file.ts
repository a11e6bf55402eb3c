import fs from 'node:fs';
import v8 from 'node:v8';
import { Worker } from 'node:worker_threads';
import cliProgress from 'cli-progress';
import { stringify } from 'csv-stringify/sync';
import { DERIVED_TABLES } from './db/dialect.js';
import type { Ctx } from './services/context.js';
import { validationError } from './services/errors.js';
import { applyImport, applyImportPieces, type ImportDetail, type ImportPlan, joinPlans, type NameCache, neutralize, planImport } from './services/import-export.js';
import { primePhones } from './services/phone.js';
import { defaultRegion, type ParsedPhone } from './services/phone-parse.js';
import { type ObjectDef, resolveObject } from './services/schema.js';

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

const norm = (s: string) =>
  s
    .trim()
    .toLowerCase()
    .replace(/[\s\-./]+/g, '_');
/** "E-mail", "e mail" and "email" are the same header. */
const squash = (s: string) => s.toLowerCase().replace(/[^\p{L}\p{N}]/gu, '');

/** Header -> field name: --map first, then field name, then label, then a normalised form. */
export function headerMapping(obj: ObjectDef, headers: string[], map?: string): { mapping: Map<string, string>; ignored: string[] } {
  const explicit = new Map<string, string>();
  for (const pair of (map ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    const eq = pair.lastIndexOf('=');
    if (eq < 1) throw validationError(`--map takes "Header=field" pairs separated by commas; got '${pair}'`);
    const field = pair.slice(eq + 1).trim();
    if (!obj.byName.has(field) && !isNameHelper(obj, field))
      throw validationError(
        `--map: '${field}' is not a field of ${obj.name}. Fields: ${obj.fields
          .filter((f) => !f.readOnly)
          .map((f) => f.name)
          .join(', ')}`,
      );
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
    r[field] =
      f?.type === 'MULTI_SELECT' && typeof v === 'string'
        ? v
            .split(/[;,]/)
            .map((s) => s.trim())
            .filter(Boolean)
        : v;
  }
  return r;
}

interface ReadBatch {
  rows: Record<string, unknown>[];
  /** Phone numbers of the batch, parsed by the reader thread. */
  phones: [string, ParsedPhone | null][];
  /** Bytes of the file read so far. */
  bytes: number;
  /** The piece ends a batch (or the file). */
  last: boolean;
  /** The piece as the reader thread sent it (unpackRows reads its rows again: the rejects file). */
  packed: Uint8Array;
}

/** The rows of a piece as read (readBatches' `packed`). */
export function unpackRows(packed: Uint8Array): Record<string, unknown>[] {
  return (v8.deserialize(packed) as { rows: Record<string, unknown>[] }).rows;
}

/**
 * The file's rows in batches of `batch` rows, each in pieces of at most `chunk` (the last piece of
 * a batch says so; the file's first piece at most `first`), read and parsed on a worker thread
 * (import-reader.js) while this thread prepares and writes: at most two batches ahead. Stops the
 * thread when the caller stops early.
 */
export async function* readBatches(file: string, batch: number, chunk = batch, first = chunk): AsyncGenerator<ReadBatch> {
  chunk = Math.min(chunk, batch);
  const worker = new Worker(new URL('./import-reader.js', import.meta.url), { workerData: { file, batch, chunk, first: Math.min(first, chunk), region: defaultRegion } });
  type Message = { type: 'batch'; packed: Uint8Array; bytes: number; last: boolean } | { type: 'end'; bytes: number } | { type: 'error'; message: string; user: boolean };
  const queue: Message[] = [];
  let failure: Error | null = null;
  let wake: (() => void) | null = null;
  const push = () => {
    wake?.();
    wake = null;
  };
  worker.on('message', (m: Message) => {
    queue.push(m);
    push();
  });
  worker.on('error', (e) => {
    failure = e;
    push();
  });
  // It never ends on its own (it waits to be terminated below): an exit here means it failed.
  worker.on('exit', (code) => {
    if (!failure) failure = new Error(`the import reader thread stopped before the end of the file (exit code ${code})`);
    push();
  });
  try {
    for (;;) {
      const m = queue.shift();
      if (!m) {
        if (failure) throw failure;
        await new Promise<void>((resolve) => (wake = resolve));
        continue;
      }
      if (m.type === 'error') throw m.user ? validationError(m.message) : new Error(m.message);
      if (m.type === 'end') return;
      worker.postMessage('more');
      // Read only now: the pieces read ahead wait as buffers, not as objects the collector copies.
      const { rows, phones } = v8.deserialize(m.packed) as Pick<ReadBatch, 'rows' | 'phones'>;
      yield { rows, phones, bytes: m.bytes, last: m.last, packed: m.packed };
    }
  } finally {
    await worker.terminate();
  }
}

/** Plans handed from the loop that makes them to the transaction that writes them, in order; it waits for the next until closed. */
class Pieces<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private closed = false;
  private failure: { error: unknown } | null = null;
  private wake: (() => void) | null = null;
  private signal() {
    this.wake?.();
    this.wake = null;
  }
  push(item: T) {
    this.items.push(item);
    this.signal();
  }
  close() {
    this.closed = true;
    this.signal();
  }
  fail(error: unknown) {
    this.failure = { error };
    this.signal();
  }
  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    for (;;) {
      if (this.failure) throw this.failure.error;
      const item = this.items.shift();
      if (item !== undefined) yield item;
      else if (this.closed) return;
      else await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }
}

/** Rows the import prepares at a time (planImport), as the reader thread delivers them: the first batch's preparation overlaps its reading. */
const PIECE = 1000;
/**
 * The file's first piece: smaller, so the first batch's transaction begins sooner (its rows are
 * prepared while the code is still cold and the named companies are made; the rest of the import
 * waits for it).
 */
const FIRST_PIECE = 200;

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

  const bar = opts.tty
    ? new cliProgress.SingleBar(
        { format: 'import {bar} {percentage}% | {rows} rows | {rate} rows/s | ETA {eta_formatted}', hideCursor: true, stream: process.stderr },
        cliProgress.Presets.shades_classic,
      )
    : null;
  bar?.start(size || 1, 0, { rows: 0, rate: 0 });
  let lastLine = 0;
  const progress = (final = false) => {
    const secs = (performance.now() - t0) / 1000;
    const rate = Math.round(s.rows / Math.max(secs, 0.001));
    if (bar) bar.update(Math.min(bytes, size), { rows: s.rows, rate });
    else if (final || performance.now() - lastLine > 1000) {
      lastLine = performance.now();
      process.stderr.write(
        `import: ${s.rows} rows, ${s.created} created, ${s.duplicates} duplicates, ${s.failed} failed, ${rate} rows/s${size ? `, ${Math.round((100 * Math.min(bytes, size)) / size)}%` : ''}\n`,
      );
    }
  };

  // A batch's pieces as the reader sent them, with the index of each one's first row in the batch:
  // the rows themselves are not kept once planned (the rejects file reads a failed row's piece again).
  type Batch = { packed: Uint8Array; start: number }[];
  const rawRow = (batch: Batch, index: number, unpacked: Map<Uint8Array, Record<string, unknown>[]>): Record<string, unknown> => {
    let k = batch.length - 1;
    while (k > 0 && batch[k]!.start > index) k--;
    const { packed, start } = batch[k]!;
    let rows = unpacked.get(packed);
    if (!rows) unpacked.set(packed, (rows = unpackRows(packed)));
    const item = rows[index - start];
    return item && typeof item === 'object' && !Array.isArray(item) ? (item as Record<string, unknown>) : {};
  };
  let batchRows = 0;
  const record = (batch: Batch, r: ImportDetail) => {
    s.created += r.created;
    s.duplicates += r.duplicates;
    s.failed += r.failed;
    const unpacked = new Map<Uint8Array, Record<string, unknown>[]>();
    for (const row of r.rows) {
      if (row.status !== 'failed') continue;
      const raw = rawRow(batch, row.index, unpacked);
      if (!rejects) {
        rejects = fs.createWriteStream(rejectsPath);
        rejectHeaders = [...columns, '_error'];
        rejects.write(stringify([rejectHeaders]));
      }
      // The rejects file is opened in spreadsheets too: neutralise formulas there as well.
      rejects.write(stringify([rejectHeaders!.map((h) => neutralize(h === '_error' ? row.reason : String(raw[h] ?? '')))], { quoted_match: /[\r\n]/ }));
    }
    progress();
  };

  // A pipeline: batch N+1 is validated, its names resolved, its match keys computed and looked up,
  // its search documents made (planImport, a piece of up to PIECE rows at a time, as the reader
  // thread delivers them) while batch N's transaction is in the database. Where statements run
  // beside this thread (PostgreSQL), a batch's transaction begins as soon as its first piece is
  // planned and the batch before it has committed, and takes each piece as it is planned
  // (applyImportPieces): the database writes piece k while this thread plans piece k+1, and the
  // first batch's writes start after its first piece, not its last. Each piece's rows are checked
  // against the workspace as its plan found it, the records the batch before created (whose
  // transaction was open meanwhile) and the batch's earlier pieces, so each batch sees every earlier
  // one; batch N+1 is planned once N-1 has committed; batches commit one after another, in the
  // file's order, each whole. Where statements run on this thread (SQLite) there is nothing to
  // overlap: each batch is planned (in pieces too, as the reader delivers them: the first rows are
  // planned while the reader parses the rest, instead of waiting for a whole batch), then written
  // whole (applyImport), then the next.
  const overlap = ctx.db.adapter.overlapsStatements;
  let writing: Promise<void> | null = null;
  // The keys of the records the batch being written creates: the next batch, planned meanwhile, did not see them.
  let previous = new Map<string, string>();
  // The companies (and other records) named by the file, each looked up once for the whole import.
  const names: NameCache = new Map();
  let batch: Batch = [];
  // SQLite: the batch's planned pieces. PostgreSQL: the pieces on their way to the batch's transaction,
  // and the write of the batch before it.
  let pieces: ImportPlan[] = [];
  let queue: Pieces<ImportPlan> | null = null;
  let before: Promise<void> | null = null;
  const begin = () => {
    const q = new Pieces<ImportPlan>();
    const rows = batch;
    const prior = writing;
    const earlier = previous;
    const written = new Map<string, string>();
    writing = (async () => {
      await prior;
      record(rows, await applyImportPieces(ctx, obj, q, { earlier, written }));
    })();
    // Awaited at the end of the next batch or of the file; a failure meanwhile is not unhandled.
    writing.catch(() => {});
    before = prior;
    previous = written;
    queue = q;
  };
  const finish = async () => {
    if (overlap) {
      if (!queue) return;
      queue.close();
      queue = null;
      batch = [];
      batchRows = 0;
      // The next batch's lookups see every batch but this one, whose keys it is given (previous).
      await before;
      return;
    }
    if (!pieces.length) return;
    const plan = joinPlans(pieces);
    const rows = batch;
    pieces = [];
    batch = [];
    batchRows = 0;
    record(rows, await applyImport(ctx, plan));
  };
  // Large transactions one after another: the write-ahead log is checkpointed at the end, not after each.
  await ctx.db.bulk(async () => {
    try {
      for await (const read of readBatches(opts.file, batchSize, PIECE, FIRST_PIECE)) {
        bytes = read.bytes;
        primePhones(read.phones);
        const piece: Record<string, unknown>[] = [];
        for (const item of read.rows) {
          // A JSON list may hold things that are not records: each fails alone.
          const raw = item && typeof item === 'object' && !Array.isArray(item) ? item : { __parse_error: 'Each record must be a JSON object' };
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
          piece.push(rec);
        }
        if (piece.length) {
          const plan = await planImport(ctx, obj.name, piece, batchSize, names);
          if (!overlap) pieces.push(plan);
          else {
            if (!queue) begin();
            queue!.push(plan);
          }
          batch.push({ packed: read.packed, start: batchRows });
          batchRows += piece.length;
        }
        if (read.last) await finish();
      }
      await finish();
    } catch (e) {
      // Never leave a batch's transaction open, waiting for pieces that will not come (the reader failed, say).
      (queue as Pieces<ImportPlan> | null)?.fail(e);
      throw e;
    } finally {
      await writing?.catch(() => {});
    }
    await writing;
  });
  // Fresh statistics for the planner: the object's table read whole after a large import, and
  // whatever the database finds stale (tenfold growth) after any.
  await ctx.db.adapter.analyze(ctx.db.kysely as never, s.created > 10_000, [obj.table, ...DERIVED_TABLES]);
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
