import cliProgress from 'cli-progress';
import { shownLocation } from './config.js';
import { CopyError, compareDatabases, copyDatabase, openForCopy, type TableCount } from './db/copy.js';

export interface CopyCommandOptions {
  from: string;
  to: string;
  replace?: boolean;
  quiet?: boolean;
  checkValues?: boolean;
  lockWaitMs?: number;
}

/** The counts of both sides, one table a line (stdout: the command's result). */
export function countsTable(counts: TableCount[]): string {
  const w = Math.max(5, ...counts.map((c) => c.table.length));
  const n = (x: number) => String(x).padStart(10);
  const lines = [`${'table'.padEnd(w)} ${'source'.padStart(10)} ${'target'.padStart(10)}`];
  for (const c of counts) lines.push(`${c.table.padEnd(w)} ${n(c.source)} ${n(c.target)}${c.source === c.target ? '' : '  MISMATCH'}`);
  return lines.join('\n') + '\n';
}

/**
 * `crm-mcp copy --from FILE --to postgres://…`: progress on stderr (a bar on a terminal, a line a
 * second otherwise; nothing with --quiet), the verified counts on stdout. Throws (exit 1) when the
 * target holds data without --replace, or a count (or, with --check-values, a value) differs.
 */
export async function runCopy(opts: CopyCommandOptions): Promise<void> {
  const { source, target } = openForCopy(opts.from, opts.to, opts.lockWaitMs);
  const tty = process.stderr.isTTY === true;
  const bar =
    !opts.quiet && tty
      ? new cliProgress.SingleBar(
          { format: 'copy {bar} {percentage}% | {value}/{total} rows and search documents | {step} | ETA {eta_formatted}', hideCursor: true, stream: process.stderr },
          cliProgress.Presets.shades_classic,
        )
      : null;
  let lastLine = 0;
  try {
    if (!opts.quiet) process.stderr.write(`copy: ${opts.from} -> ${shownLocation(opts.to)}${opts.replace ? ' (replacing its data)' : ''}\n`);
    const r = await copyDatabase(source, target, {
      replace: opts.replace === true,
      onProgress: ({ step, done, total }) => {
        if (opts.quiet) return;
        if (bar) {
          if (step === 'start') bar.start(Math.max(total, 1), 0, { step: '' });
          else bar.update(done, { step });
        } else if (performance.now() - lastLine > 1000 || done === total) {
          lastLine = performance.now();
          process.stderr.write(`copy: ${done}/${total} rows and search documents (${step})\n`);
        }
      },
    }).catch((e: unknown) => {
      bar?.stop();
      if (e instanceof CopyError && e.counts) process.stdout.write(countsTable(e.counts));
      throw e;
    });
    bar?.stop();
    process.stdout.write(countsTable(r.counts));
    const p = r.phases;
    process.stdout.write(
      `copied ${r.rows} rows in ${r.seconds.toFixed(2)} s (${Math.round(r.rows / Math.max(r.seconds, 0.001))} rows/s); ${r.searchDocs} search documents rebuilt; all ${r.counts.length} tables' counts equal\n` +
        `time: migrate ${p.migrate.toFixed(2)} s, rows ${p.rows.toFixed(2)} s (${Math.round(r.rows / Math.max(p.rows, 0.001))} rows/s), search ${p.search.toFixed(2)} s, counts ${p.verify.toFixed(2)} s\n`,
    );
    if (opts.checkValues) {
      const diffs = await compareDatabases(source, target);
      if (diffs.length) throw new CopyError(`values differ after the copy (committed):\n  ${diffs.join('\n  ')}`);
      process.stdout.write('values: every table reads back the same on both sides\n');
    }
  } finally {
    await source.close();
    await target.close();
  }
}
