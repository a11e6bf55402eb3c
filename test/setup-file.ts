import { beforeAll } from 'vitest';
import { setClock } from '../src/services/clock.js';

/**
 * Run before each test file (vitest.config.ts setupFiles). Files share a worker's modules
 * (isolate: false), so a clock one file pinned must not carry over into the next.
 */
beforeAll(() => setClock(null));
