import { beforeAll } from 'vitest';
import { setClock } from '../src/services/clock.js';

/**
 * Run before each test file (vitest.config.ts setupFiles), in the file's worker. Files share a
 * worker's modules (isolate: false) and run two at a time (maxWorkers). On PostgreSQL they share
 * one database, each file in schemas of its own: that two deployments (shared schemas) on one
 * database keep apart, advisory locks included, is part of what the suite shows
 * (test/write-conflicts.test.ts, "two deployments on one PostgreSQL database").
 */

// A clock one file pinned must not carry over into the next.
beforeAll(() => setClock(null));
