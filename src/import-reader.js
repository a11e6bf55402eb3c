// The reading half of `crm-mcp import`, on its own thread: reads and parses the file (CSV, JSON or
// JSON Lines) in batches, and parses the batch's phone numbers (the costliest per-row work, 10 to 30
// µs each), while the main thread writes the previous batch. Plain JavaScript so the same file
// loads from src/ (tests, tsx) and dist/.
//
// workerData: { file, batch, chunk, first, region }. Messages out: { type: 'batch', packed, bytes, last }
// (packed: v8.serialize of { rows, phones }) with at most `chunk` rows (a batch's rows in pieces, so the main thread starts on the first rows
// of a batch while this thread reads the rest; `last`: the piece ends a batch of `batch` rows; the
// file's first piece holds at most `first` rows, so the main thread's work starts sooner), then
// { type: 'end', bytes }, or { type: 'error', message }. Messages in: 'more' (the main thread took a
// piece). At most two batches' pieces wait unread, so memory stays flat.
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import v8 from 'node:v8';
import { parentPort, workerData } from 'node:worker_threads';
import { parse } from 'csv-parse';
import { parsePhone, phoneShaped } from './services/phone-parse.js';

/** A message for the user (an unsupported file, a JSON file that is not a list of records). */
class ReadError extends Error {}

/**
 * @param {string} file
 * @param {(n: number) => void} onBytes
 * @returns {AsyncGenerator<Record<string, unknown>>}
 */
async function* readRows(file, onBytes) {
  const ext = path.extname(file).toLowerCase();
  if (ext === '.json') {
    let data;
    try {
      data = JSON.parse(await fs.promises.readFile(file, 'utf8'));
    } catch (e) {
      throw new ReadError(`${file} is not valid JSON: ${e instanceof Error ? e.message : String(e)}`);
    }
    const list = Array.isArray(data) ? data : data?.records;
    if (!Array.isArray(list)) throw new ReadError(`${file}: expected a JSON array of records (or {"records": [...]})`);
    onBytes(fs.statSync(file).size);
    yield* list;
    return;
  }
  if (!['.jsonl', '.ndjson', '.csv', '.txt'].includes(ext)) throw new ReadError(`Unsupported file type '${ext}': use .csv, .json, .jsonl or .ndjson`);
  const stream = fs.createReadStream(file);
  stream.on('data', (chunk) => onBytes(chunk.length));
  if (ext === '.jsonl' || ext === '.ndjson') {
    let line = 0;
    for await (const text of readline.createInterface({ input: stream, crlfDelay: Infinity })) {
      line++;
      if (!text.trim()) continue;
      try {
        yield JSON.parse(text);
      } catch {
        yield { __parse_error: `line ${line} is not valid JSON` };
      }
    }
    return;
  }
  yield* stream.pipe(parse({ columns: true, bom: true, trim: true, skip_empty_lines: true, relax_column_count: true }));
}

const port = /** @type {import('node:worker_threads').MessagePort} */ (parentPort);
const { file, batch: size, chunk, first, region } = /** @type {{ file: string, batch: number, chunk: number, first: number, region: string }} */ (workerData);
let credit = 2 * Math.ceil(size / chunk);
/** @type {(() => void) | null} */
let wake = null;
port.on('message', () => {
  credit++;
  wake?.();
});

let bytes = 0;
/**
 * @param {Record<string, unknown>[]} rows
 * @param {boolean} last
 */
async function send(rows, last) {
  while (credit === 0) await new Promise((resolve) => (wake = () => resolve(undefined)));
  wake = null;
  credit--;
  // Every value shaped like a phone number, whichever column it is in (the thread does not know the
  // schema): a date or a postcode parsed for nothing costs this thread, not the writes.
  /** @type {Map<string, import('./services/phone-parse.js').ParsedPhone | null>} */
  const phones = new Map();
  for (const r of rows)
    if (r && typeof r === 'object')
      for (const v of Object.values(r)) {
        const s = typeof v === 'string' ? v.trim() : v;
        if (typeof s === 'string' && !phones.has(s) && phoneShaped(s)) phones.set(s, parsePhone(s, region));
      }
  // The piece as one serialised buffer, moved to the main thread without a copy: it waits there off
  // the heap (the garbage collector neither scans nor copies it) until its rows are planned, and the
  // rows of the pieces read ahead are not objects the main thread's collections keep copying.
  const packed = v8.serialize({ rows, phones: [...phones] });
  const owned = packed.byteOffset === 0 && packed.byteLength === packed.buffer.byteLength;
  const data = owned ? packed : new Uint8Array(packed);
  port.postMessage({ type: 'batch', packed: data, bytes, last }, [data.buffer]);
}

try {
  /** @type {Record<string, unknown>[]} */
  let rows = [];
  let inBatch = 0;
  let piece = first;
  for await (const r of readRows(file, (n) => (bytes += n))) {
    rows.push(r);
    inBatch++;
    if (rows.length >= piece || inBatch >= size) {
      piece = chunk;
      await send(rows, inBatch >= size);
      if (inBatch >= size) inBatch = 0;
      rows = [];
    }
  }
  if (rows.length) await send(rows, true);
  port.postMessage({ type: 'end', bytes });
} catch (e) {
  // A file the user must fix (csv-parse's errors carry a CSV_ code), or a fault of ours.
  const user = e instanceof ReadError || (e instanceof Error && 'code' in e && String(e.code).startsWith('CSV_'));
  port.postMessage({ type: 'error', message: e instanceof Error ? e.message : String(e), user });
}
// The port stays open: the main thread ends this thread once it has read every message.
