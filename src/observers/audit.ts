/**
 * `sluice/audit`: an audit sink that appends one JSON line per handled event to a file and
 * fsyncs before acknowledging. Concurrent records share one write and one fsync (group commit).
 * A failed open, write or fsync rejects every record of that group; the bus retries each until
 * it is durable, so an audit record is never lost while the bus runs.
 */
import { mkdir, open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { AuditRecord, Observer } from '../index.js';

export interface AuditSinkOptions {
  /** The JSON-lines file (appended to; created if missing). */
  file: string;
  /** Create missing parent directories (default false: a missing directory is a failure). */
  mkdir?: boolean;
}

interface Waiter {
  line: string;
  resolve: () => void;
  reject: (e: unknown) => void;
}

export function auditSink(options: AuditSinkOptions): Observer & { readonly written: number } {
  if (!options || typeof options.file !== 'string' || options.file === '') throw new TypeError('auditSink needs options.file');
  const { file } = options;
  let fh: FileHandle | undefined;
  let queue: Waiter[] = [];
  let writing = false;
  let written = 0;

  async function handle(): Promise<FileHandle> {
    if (fh) return fh;
    if (options.mkdir) await mkdir(dirname(file), { recursive: true });
    const h = await open(file, 'a');
    try {
      // The file's directory entry must be durable too, or a crash could lose the whole file.
      const dir = await open(dirname(file), 'r');
      try {
        await dir.sync();
      } finally {
        await dir.close();
      }
    } catch (e) {
      await h.close().catch(() => {});
      throw e;
    }
    fh = h;
    return fh;
  }

  async function drain(): Promise<void> {
    writing = true;
    while (queue.length) {
      const group = queue;
      queue = [];
      try {
        const h = await handle();
        await h.write(group.map((w) => w.line).join(''));
        await h.sync();
        written += group.length;
        for (const w of group) w.resolve();
      } catch (e) {
        // The handle may be broken; reopen on the retry.
        const old = fh;
        fh = undefined;
        await old?.close().catch(() => {});
        for (const w of group) w.reject(e);
      }
    }
    writing = false;
  }

  return {
    name: 'sluice/audit',
    kind: 'audit',
    get written() {
      return written;
    },
    audit(record: AuditRecord) {
      return new Promise<void>((resolve, reject) => {
        queue.push({ line: `${JSON.stringify(record)}\n`, resolve, reject });
        if (!writing) void drain();
      });
    },
    async close() {
      while (writing) await new Promise((r) => setImmediate(r));
      await fh?.close();
      fh = undefined;
    },
  };
}

/** Loaded by specifier (`observers: ['sluice/audit']`): writes `SLUICE_AUDIT_FILE` (default `sluice-audit.jsonl`). */
export default function auditFromEnv(): Observer {
  return auditSink({ file: process.env.SLUICE_AUDIT_FILE ?? 'sluice-audit.jsonl' });
}
