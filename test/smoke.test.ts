import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, type TestApp, testApp } from './helpers.js';

describe('smoke', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await testApp();
  });
  afterAll(() => t.close());

  it('creates and reads back a contact', async () => {
    const c = await call(t.app, t.a.adminToken, 'POST', '/api/v1/records/contacts', { first_name: 'Alice', email: 'Alice@Example.com' });
    expect(c.status).toBe(201);
    expect(c.body.data).toMatchObject({ first_name: 'Alice', email: 'alice@example.com', status: 'lead' });
    const g = await call(t.app, t.a.adminToken, 'GET', `/api/v1/records/contacts/${c.body.data.id}`);
    expect(g.status).toBe(200);
    expect(g.body.data.associations).toEqual({});
  });
});
