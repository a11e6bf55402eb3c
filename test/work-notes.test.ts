import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setClock } from '../src/services/clock.js';
import { call, type TestApp, testApp } from './helpers.js';

/**
 * Notes over REST: create, list (visibility per user), update and delete (author or admin only),
 * their timeline entries (shared notes only), errors, and tenancy.
 */

let t: TestApp;
const api = (token: string, method: string, url: string, body?: unknown) => call(t.app, token, method, `/api/v1${url}`, body);
const admin = () => t.a.adminToken;
const member = () => t.a.memberToken;
let contactId: string;
let companyId: string;

/** The notes created in beforeAll, by role. */
const n: Record<'adminPrivate' | 'adminShared' | 'memberPrivate' | 'memberShared' | 'loose', string> = {} as never;

async function listIds(token: string, query = ''): Promise<string[]> {
  const r = await api(token, 'GET', `/notes?limit=100${query ? `&${query}` : ''}`);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  expect(r.body.total).toBe(r.body.data.length);
  return r.body.data.map((x: { id: string }) => x.id);
}

async function timelineActions(object: string, id: string, token = admin()) {
  const r = await api(token, 'GET', `/activity/${object}/${id}?limit=100`);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.data as { action: string; via: string; user: { id: string; name: string }; details: any }[];
}

beforeAll(async () => {
  t = await testApp();
  contactId = (await api(admin(), 'POST', '/records/contacts', { first_name: 'Grace', last_name: 'Hopper' })).body.data.id;
  companyId = (await api(admin(), 'POST', '/records/companies', { name: 'Navy' })).body.data.id;
  const make = async (token: string, body: Record<string, unknown>) => {
    const r = await api(token, 'POST', '/notes', body);
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return r.body.data.id as string;
  };
  n.adminPrivate = await make(admin(), { body: 'Admin private thought', visibility: 'private', object: 'contacts', record_id: contactId });
  n.adminShared = await make(admin(), { body: 'Admin shared: budget approved', object: 'contacts', record_id: contactId });
  n.memberPrivate = await make(member(), { body: 'Member private: call back Monday', visibility: 'private', object: 'contacts', record_id: contactId });
  n.memberShared = await make(member(), { body: 'Member shared: met at the conference', visibility: 'workspace', object: 'contacts', record_id: contactId });
  n.loose = await make(member(), { body: 'A note on no record' });
});
afterAll(() => t.close());

describe('POST /notes', () => {
  it('returns the note with its author, visibility defaulting to workspace', async () => {
    const r = await api(member(), 'POST', '/notes', { body: '  Trimmed body  ', object: 'companies', record_id: companyId });
    expect(r.status).toBe(201);
    expect(r.body.data).toMatchObject({
      body: 'Trimmed body',
      visibility: 'workspace',
      object: 'companies',
      record_id: companyId,
      author: { id: t.a.member.id, name: 'alpha Member' },
    });
    expect(r.body.data.created_at).toBe(r.body.data.updated_at);
    const got = await api(admin(), 'GET', `/notes/${r.body.data.id}`);
    expect(got.body.data).toEqual(r.body.data);
    await api(member(), 'DELETE', `/notes/${r.body.data.id}`);
  });

  it('refuses bad input with actionable messages', async () => {
    const cases: [unknown, number, string, RegExp][] = [
      [{}, 400, 'VALIDATION_ERROR', /body/],
      [{ body: '   ' }, 400, 'VALIDATION_ERROR', /body is required/],
      [{ body: 'x', visibility: 'team' }, 400, 'VALIDATION_ERROR', /private.*workspace/],
      [{ body: 'x', object: 'contacts' }, 400, 'VALIDATION_ERROR', /both object and record_id/],
      [{ body: 'x', object: 'planets', record_id: 'p1' }, 400, 'INVALID_OBJECT', /planets/],
      [{ body: 'x', object: 'contacts', record_id: 'no-such-contact' }, 404, 'RECORD_NOT_FOUND', /no-such-contact/],
      [{ body: 'x', pinned: true }, 400, 'VALIDATION_ERROR', /pinned/],
    ];
    const before = await listIds(admin());
    for (const [body, status, code, message] of cases) {
      const r = await api(admin(), 'POST', '/notes', body);
      expect(r.status, JSON.stringify(body)).toBe(status);
      expect(r.body, JSON.stringify(body)).toMatchObject({ error: true, code });
      expect(r.body.message, JSON.stringify(body)).toMatch(message);
    }
    expect(await listIds(admin())).toEqual(before);
  });
});

describe('GET /notes: visibility across two users', () => {
  it("a member's private note is invisible to the admin, and the admin's to the member", async () => {
    const adminSees = await listIds(admin());
    const memberSees = await listIds(member());
    expect(new Set(adminSees)).toEqual(new Set([n.adminPrivate, n.adminShared, n.memberShared, n.loose]));
    expect(new Set(memberSees)).toEqual(new Set([n.memberPrivate, n.adminShared, n.memberShared, n.loose]));
    // Not even by id.
    const peek = await api(admin(), 'GET', `/notes/${n.memberPrivate}`);
    expect(peek.status).toBe(404);
    expect(peek.body).toMatchObject({ error: true, code: 'RECORD_NOT_FOUND' });
    expect((await api(member(), 'GET', `/notes/${n.adminPrivate}`)).status).toBe(404);
    expect((await api(member(), 'GET', `/notes/${n.memberPrivate}`)).body.data.body).toBe('Member private: call back Monday');
  });

  it('newest first, with total and a cursor that pages without gaps or duplicates', async () => {
    const full = await listIds(member());
    // Created in this order, so newest first is the reverse.
    expect(full).toEqual([n.loose, n.memberShared, n.memberPrivate, n.adminShared]);
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const r = await api(member(), 'GET', `/notes?limit=1${cursor ? `&cursor=${cursor}` : ''}`);
      expect(r.body.total).toBe(4);
      seen.push(...r.body.data.map((x: { id: string }) => x.id));
      cursor = r.body.nextCursor;
    } while (cursor);
    expect(seen).toEqual(full);
    // A cursor that decodes but is not one this endpoint handed out is refused, not a 500 or an empty page.
    for (const junk of ['null', '{}', '1', '{"t":1,"i":[1]}', 'not json']) {
      const r = await api(member(), 'GET', `/notes?cursor=${Buffer.from(junk).toString('base64url')}`);
      expect(r.status, junk).toBe(400);
      expect(r.body, junk).toEqual({ error: true, code: 'VALIDATION_ERROR', message: 'Invalid cursor: pass nextCursor back unchanged' });
    }
  });

  it('notes written in the same instant still list newest first, across pages', async () => {
    const made: string[] = [];
    try {
      setClock(Date.parse('2026-05-01T12:00:00Z'));
      for (let i = 0; i < 6; i++) made.push((await api(admin(), 'POST', '/notes', { body: `same instant ${i}`, visibility: 'private' })).body.data.id);
    } finally {
      setClock(null);
    }
    try {
      const newestFirst = [...made].reverse();
      expect(await listIds(admin(), 'q=same instant')).toEqual(newestFirst);
      const page1 = await api(admin(), 'GET', '/notes?q=same%20instant&limit=4');
      const page2 = await api(admin(), 'GET', `/notes?q=same%20instant&limit=4&cursor=${page1.body.nextCursor}`);
      expect([...page1.body.data, ...page2.body.data].map((x: { id: string }) => x.id)).toEqual(newestFirst);
      expect(page2.body.nextCursor).toBeNull();
    } finally {
      for (const id of made) await api(admin(), 'DELETE', `/notes/${id}`);
    }
  });

  it('filters: record, visibility (private, workspace, mine) and text', async () => {
    expect(new Set(await listIds(admin(), `object=contacts&record_id=${contactId}`))).toEqual(new Set([n.adminPrivate, n.adminShared, n.memberShared]));
    expect(await listIds(admin(), 'visibility=private')).toEqual([n.adminPrivate]);
    expect(await listIds(member(), 'visibility=private')).toEqual([n.memberPrivate]);
    expect(new Set(await listIds(member(), 'visibility=workspace'))).toEqual(new Set([n.adminShared, n.memberShared, n.loose]));
    expect(new Set(await listIds(member(), 'visibility=mine'))).toEqual(new Set([n.memberPrivate, n.memberShared, n.loose]));
    expect(await listIds(admin(), 'q=BUDGET')).toEqual([n.adminShared]);
    // Text search never reaches another user's private note.
    expect(await listIds(admin(), 'q=call back')).toEqual([]);
    const bad = await api(admin(), 'GET', '/notes?visibility=everyone');
    expect(bad.status).toBe(400);
    expect(bad.body.message).toMatch(/private.*workspace.*mine/);
    const obj = await api(admin(), 'GET', '/notes?object=planets');
    expect(obj.status).toBe(400);
    expect(obj.body.code).toBe('INVALID_OBJECT');
  });
});

describe('PUT and DELETE /notes/{id}: only the author or an admin', () => {
  it("a member cannot edit or delete the admin's shared note (403)", async () => {
    const put = await api(member(), 'PUT', `/notes/${n.adminShared}`, { body: 'defaced' });
    expect(put.status).toBe(403);
    expect(put.body).toEqual({ error: true, code: 'PERMISSION_DENIED', message: 'Only the author of a note, or an admin, may change or delete it' });
    const del = await api(member(), 'DELETE', `/notes/${n.adminShared}`);
    expect(del.status).toBe(403);
    expect(del.body.code).toBe('PERMISSION_DENIED');
    expect((await api(admin(), 'GET', `/notes/${n.adminShared}`)).body.data.body).toBe('Admin shared: budget approved');
  });

  it("the admin can edit the member's shared note; the author stays the member", async () => {
    const r = await api(admin(), 'PUT', `/notes/${n.memberShared}`, { body: 'Member shared: met at the conference (edited by admin)' });
    expect(r.status).toBe(200);
    expect(r.body.data).toMatchObject({ body: 'Member shared: met at the conference (edited by admin)', author: { id: t.a.member.id, name: 'alpha Member' } });
    const entry = (await timelineActions('contacts', contactId))[0]!;
    expect(entry).toMatchObject({ action: 'note_updated', via: 'rest', user: { id: t.a.admin.id, name: 'alpha Admin' }, details: { note_id: n.memberShared } });
  });

  it("the admin cannot reach the member's private note at all (404, not 403)", async () => {
    const r = await api(admin(), 'PUT', `/notes/${n.memberPrivate}`, { body: 'x' });
    expect(r.status).toBe(404);
    expect(r.body.code).toBe('RECORD_NOT_FOUND');
  });

  it('the author edits and deletes their own note, visibility included', async () => {
    const id = (await api(member(), 'POST', '/notes', { body: 'Draft', visibility: 'private' })).body.data.id;
    const shared = await api(member(), 'PUT', `/notes/${id}`, { visibility: 'workspace' });
    expect(shared.body.data).toMatchObject({ body: 'Draft', visibility: 'workspace' });
    expect(await listIds(admin())).toContain(id);
    const hidden = await api(member(), 'PUT', `/notes/${id}`, { visibility: 'private' });
    expect(hidden.body.data.visibility).toBe('private');
    expect(await listIds(admin())).not.toContain(id);
    const bad = await api(member(), 'PUT', `/notes/${id}`, { author_id: t.a.admin.id });
    expect(bad.status).toBe(400);
    expect(bad.body.message).toMatch(/author_id/);
    const del = await api(member(), 'DELETE', `/notes/${id}`);
    expect(del.status).toBe(200);
    expect(del.body).toEqual({ data: { id, deleted: true } });
    expect((await api(member(), 'GET', `/notes/${id}`)).status).toBe(404);
    expect((await api(member(), 'DELETE', `/notes/${id}`)).status).toBe(404);
  });

  it("the admin can delete the member's shared note", async () => {
    const id = (await api(member(), 'POST', '/notes', { body: 'Shared, to be removed', object: 'companies', record_id: companyId })).body.data.id;
    expect((await api(admin(), 'DELETE', `/notes/${id}`)).status).toBe(200);
    expect(await listIds(member())).not.toContain(id);
    const actions = (await timelineActions('companies', companyId)).map((e) => e.action);
    expect(actions.slice(0, 2)).toEqual(['note_deleted', 'note_added']);
  });
});

describe('notes in the timeline', () => {
  it('shared notes leave note_added with the author; private notes leave nothing', async () => {
    const entries = await timelineActions('contacts', contactId);
    const added = entries.filter((e) => e.action === 'note_added');
    expect(added.map((e) => e.details.note_id).sort()).toEqual([n.adminShared, n.memberShared].sort());
    expect(added.find((e) => e.details.note_id === n.memberShared)).toMatchObject({ via: 'rest', user: { id: t.a.member.id, name: 'alpha Member' } });
    const mentioned = JSON.stringify(entries);
    expect(mentioned).not.toContain(n.adminPrivate);
    expect(mentioned).not.toContain(n.memberPrivate);
    // The member sees the same timeline: nothing in it reveals a private note.
    expect(JSON.stringify(await timelineActions('contacts', contactId, member()))).not.toContain(n.adminPrivate);
  });

  it('a private note that is shared enters the timeline as added; hiding it again adds nothing', async () => {
    const id = (await api(member(), 'POST', '/notes', { body: 'draft, shared later', visibility: 'private', object: 'companies', record_id: companyId })).body.data.id;
    const before = (await timelineActions('companies', companyId)).length;
    await api(member(), 'PUT', `/notes/${id}`, { visibility: 'workspace' });
    const [first] = await timelineActions('companies', companyId);
    expect(first).toMatchObject({ action: 'note_added', user: { id: t.a.member.id }, details: { note_id: id } });
    await api(member(), 'PUT', `/notes/${id}`, { body: 'shared, edited' });
    expect((await timelineActions('companies', companyId))[0]).toMatchObject({ action: 'note_updated', details: { note_id: id } });
    await api(member(), 'PUT', `/notes/${id}`, { visibility: 'private', body: 'hidden again' });
    expect((await timelineActions('companies', companyId)).length).toBe(before + 2);
    await api(member(), 'DELETE', `/notes/${id}`);
    expect((await timelineActions('companies', companyId)).length).toBe(before + 2);
  });

  it('editing or deleting a private note leaves no trace either', async () => {
    const before = (await timelineActions('contacts', contactId)).length;
    const id = (await api(admin(), 'POST', '/notes', { body: 'secret', visibility: 'private', object: 'contacts', record_id: contactId })).body.data.id;
    await api(admin(), 'PUT', `/notes/${id}`, { body: 'still secret' });
    await api(admin(), 'DELETE', `/notes/${id}`);
    expect((await timelineActions('contacts', contactId)).length).toBe(before);
  });
});

describe('tenancy', () => {
  it("workspace B sees none of A's notes and cannot change them", async () => {
    const B = t.b.adminToken;
    expect((await api(B, 'GET', '/notes')).body).toEqual({ data: [], total: 0, nextCursor: null });
    expect((await api(B, 'GET', `/notes?object=contacts&record_id=${contactId}`)).body.total).toBe(0);
    for (const [method, body] of [
      ['GET', undefined],
      ['PUT', { body: 'x' }],
      ['DELETE', undefined],
    ] as const) {
      const r = await api(B, method, `/notes/${n.adminShared}`, body);
      expect(r.status, method).toBe(404);
      expect(r.body.code).toBe('RECORD_NOT_FOUND');
    }
    // A note of B cannot attach to A's record.
    const attach = await api(B, 'POST', '/notes', { body: 'x', object: 'contacts', record_id: contactId });
    expect(attach.status).toBe(404);
    const mine = await api(B, 'POST', '/notes', { body: 'B shared note' });
    expect(mine.status).toBe(201);
    expect(await listIds(admin())).not.toContain(mine.body.data.id);
    expect((await api(admin(), 'GET', `/notes/${mine.body.data.id}`)).status).toBe(404);
  });
});
