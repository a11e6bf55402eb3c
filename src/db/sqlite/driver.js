// Which better-sqlite3 this process loads. Plain JavaScript so the same file loads from src/
// (tests, tsx), dist/ and the read-worker thread.
//
// better-sqlite3 12 is built on node::ObjectWrap. Node 24's headers (24.19 on) make its destructor
// remove an environment cleanup hook, and V8 may run it inside a garbage collection where no
// context is entered: the process aborts (`Assertion failed: (env) != nullptr` in
// RemoveEnvironmentCleanupHook, from Statement::~Statement) as soon as a collected statement is
// finalised there (WiseLibs/better-sqlite3#1515). better-sqlite3 13 uses Node-API and does not, but
// requires Node 22. So: 13 (optional dependency `better-sqlite3-napi`, prebuilt, no install
// script) on Node 22 and later when it is installed and loads; 12 otherwise (Node 20).
import { createRequire } from 'node:module';
import { zoneShifted } from '../zone-offset.js';

const require = createRequire(import.meta.url);
const major = Number(process.versions.node.split('.')[0]);

/** @returns {{ Database: typeof import('better-sqlite3'), driver: string }} */
function load() {
  const wanted = process.env.CRM_SQLITE_DRIVER; // 'better-sqlite3' or 'better-sqlite3-napi': for tests and diagnosis
  if (wanted !== 'better-sqlite3' && (wanted === 'better-sqlite3-napi' || major >= 22)) {
    try {
      const Database = require('better-sqlite3-napi');
      // Loads the native binding now, so a missing prebuild for this platform falls back below.
      new Database(':memory:').close();
      return { Database, driver: 'better-sqlite3-napi' };
    } catch (e) {
      if (wanted === 'better-sqlite3-napi') throw e;
    }
  }
  return { Database: require('better-sqlite3'), driver: 'better-sqlite3' };
}

const loaded = load();
/** The better-sqlite3 Database class this process uses. */
export const Database = loaded.Database;
/** 'better-sqlite3' (12) or 'better-sqlite3-napi' (13). */
export const sqliteDriver = loaded.driver;
export default Database;

/**
 * SQL functions every connection of this project has, the main one and the read workers' alike:
 * crm_lower folds case by Unicode's rules (SQLite's lower() and LIKE fold ASCII letters only), as
 * PostgreSQL's lower() does, so a case-insensitive match finds 'Élodie' for 'élodie' on both;
 * crm_zone_shifted reads a zone's offset at an instant (see time-buckets.ts).
 * @param {import('better-sqlite3').Database} db
 */
export function registerFunctions(db) {
  db.function('crm_lower', { deterministic: true }, (s) => (typeof s === 'string' ? s.toLowerCase() : s));
  // The local wall time of an instant in a zone, for the instants beyond a bucket's CASE of offsets.
  db.function('crm_zone_shifted', { deterministic: true }, (iso, tz) => (typeof tz === 'string' ? zoneShifted(iso, tz) : null));
}
