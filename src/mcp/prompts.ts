import { completable } from '@modelcontextprotocol/sdk/server/completable.js';
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { GetPromptResult } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { pipelineReview, weeklyDigest } from '../services/briefings.js';
import type { Ctx, Log } from '../services/context.js';
import { findDuplicates } from '../services/duplicates.js';
import { getRecord } from '../services/records.js';
import { getSchema } from '../services/schema.js';
import { me } from '../services/users.js';
import { protocolError } from './errors.js';
import { compactJson } from './render.js';
import { UNTRUSTED_NOTE, untrusted } from './untrusted.js';

export interface PromptDeps {
  /** A service context acting as the session's user, with this surface. */
  ctxFor: (via: string) => Promise<Ctx>;
  log: Log;
}

/**
 * Prompts: a task for the model plus the CRM data it needs, computed by the services when the
 * prompt is fetched. The data is what users typed (names, notes, next steps): it goes inside
 * <untrusted_content> blocks, the instructions stay outside them.
 */
export function registerPrompts(server: McpServer, deps: PromptDeps): void {
  const objectNames = async () => [...(await getSchema(await deps.ctxFor('mcp:completion'))).objects.keys()];
  const pipelineObjects = async () => [...(await getSchema(await deps.ctxFor('mcp:completion'))).objects.values()].filter((o) => o.pipeline).map((o) => o.name);
  const startsWith = (names: string[], value: string | undefined) => names.filter((n) => n.startsWith(value ?? ''));

  const prompt = (text: string, data: { source: string; value: unknown }[], description: string): GetPromptResult => ({
    description,
    messages: [
      {
        role: 'user',
        content: { type: 'text', text: [text, UNTRUSTED_NOTE, ...data.map((d) => untrusted(d.source, compactJson(d.value)))].join('\n\n') },
      },
    ],
  });
  /** Runs a prompt's body with the session's user; failures answer as JSON-RPC errors naming the fix. */
  const run =
    <A>(name: string, body: (ctx: Ctx, args: A) => Promise<GetPromptResult>) =>
    async (args: A) => {
      try {
        return await body(await deps.ctxFor('mcp:prompts/get'), args);
      } catch (e) {
        throw protocolError(e, deps.log, `prompt ${name}`);
      }
    };

  server.registerPrompt(
    'crm_record_brief',
    {
      title: 'Brief on a record',
      description: 'A short brief on one record (a company, contact, deal...): what it is, where it stands, who and what is linked, next steps.',
      argsSchema: {
        object: completable(z.string().describe('Object name, e.g. companies'), async (value) => startsWith(await objectNames(), value)),
        id: z.string().describe('Record id'),
      },
    },
    run('crm_record_brief', async (ctx, { object, id }: { object: string; id: string }) => {
      const record = await getRecord(ctx, object, id, { enrich: true });
      return prompt(
        `Write a short brief on this ${object} record (id ${id}): what it is, its status, the people, companies and deals linked ` +
          'to it, and sensible next steps. Use the crm_* tools if you need more (crm_get_activity for its history).',
        [{ source: `${object} ${id}`, value: record }],
        `Brief on ${object} ${id}`,
      );
    }),
  );

  server.registerPrompt(
    'crm_pipeline_review',
    {
      title: 'Pipeline review',
      description:
        'Review a sales pipeline with its current numbers: open deals by step (count, amount, average days in step), win rate, ' +
        'and the stalled deals (longest in the same open step). Asks for risks, priorities and next actions.',
      argsSchema: {
        pipeline: completable(z.string().optional().describe('Object with the pipeline (e.g. opportunities) or pipeline id; default the first pipeline'), async (value) =>
          startsWith(await pipelineObjects(), value),
        ),
      },
    },
    run('crm_pipeline_review', async (ctx, { pipeline }: { pipeline?: string | undefined }) => {
      const review = await pipelineReview(ctx, pipeline || undefined);
      const p = review.pipeline;
      return prompt(
        `Review the "${p.name}" pipeline (${p.object}, step field ${p.field}) with the figures below, computed just now. ` +
          'Say where the pipeline stands (open deals and amounts per step, win rate), which steps hold deals too long, and which ' +
          `stalled deals (in the same open step for ${review.stalled.days}+ days) need attention first and why. Propose concrete ` +
          'next actions per deal or owner. Check details with crm_get_record and crm_get_activity, and break the numbers down ' +
          'further with crm_aggregate, before recommending; change nothing without asking.',
        [{ source: `pipeline ${p.name}`, value: review }],
        `Review of the ${p.name}`,
      );
    }),
  );

  server.registerPrompt(
    'crm_weekly_digest',
    {
      title: 'My weekly digest',
      description:
        "The session user's week: open and overdue tasks assigned to them, changes to their deals in the last 7 days, and new notes " + 'on records they own. Asks for a short digest with priorities.',
    },
    run('crm_weekly_digest', async (ctx) => {
      const who = await me(ctx);
      const digest = await weeklyDigest(ctx);
      return prompt(
        'Write a weekly digest for the user below (the one this session acts as): what needs doing first (overdue tasks, then open tasks by due ' +
          `date and priority), how their deals moved or changed since ${digest.since.slice(0, 10)}, and what the new notes on their ` +
          'records say. Keep it short, group by urgency, and name records with their ids so they can be opened. Use crm_list_tasks, ' +
          'crm_list_changes and crm_get_record for more.',
        [{ source: 'weekly digest', value: { user: { id: who.id, name: who.name, email: who.email }, ...digest } }],
        `Weekly digest for ${who.name}`,
      );
    }),
  );

  server.registerPrompt(
    'crm_clean_up_duplicates',
    {
      title: 'Clean up duplicates',
      description:
        'The most likely duplicate groups of an object (default contacts) with their evidence, and the steps to clean them up: ' + 'review, dry-run the merge with crm_merge_duplicates, then merge.',
      argsSchema: {
        object: completable(z.string().optional().describe('Object to clean up, e.g. contacts (default) or companies'), async (value) => startsWith(await objectNames(), value)),
      },
    },
    run('crm_clean_up_duplicates', async (ctx, { object }: { object?: string | undefined }) => {
      const name = object || 'contacts';
      const found = await findDuplicates(ctx, name, { limit: 10 });
      return prompt(
        `Clean up duplicate ${name}. Below are the ${found.data.length} most likely duplicate groups of ${found.total} found ` +
          '(score 0-1, with the evidence: same email, phone, domain or name). For each group, best first: ' +
          '1) review the records (crm_get_record) and decide whether they really are the same; skip the group if unsure. ' +
          '2) choose the primary (the most complete or most recently active record) and call crm_merge_duplicates with ' +
          `object "${name}", primary_id, duplicate_ids and dry_run: true; read the field changes and what would move. ` +
          '3) show the user the plan and, once they agree, call it again without dry_run. Keep the merge_id: crm_unmerge undoes a merge. ' +
          'Then call crm_find_duplicates for the next groups.',
        [{ source: `duplicate groups of ${name}`, value: found }],
        `Duplicate groups of ${name}`,
      );
    }),
  );
}
