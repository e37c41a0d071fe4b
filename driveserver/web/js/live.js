// Live updates: a long poll on the change feed (docs/sync.md). One request waits on the
// server until something changes anywhere the user can see (or 25 s pass); the page then
// re-reads what it shows if the change touches it. The page's own changes come too
// (include_own): another tab of this browser shares its device.

import {api} from './api.js';

const WAIT_SECONDS = 25;
const MAX_BACKOFF_MS = 30000;

export class LiveUpdates {
  /**
   * `onChanges(changes)` gets each non-empty batch; null means "anything may have changed"
   * (the cursor was reset). `onSignedOut()` when the session ends.
   */
  constructor({onChanges, onSignedOut}) {
    this.onChanges = onChanges;
    this.onSignedOut = onSignedOut;
    this.controller = null;
  }

  start() {
    this.stop();
    this.controller = new AbortController();
    this.loop(this.controller.signal);
  }

  stop() {
    if (this.controller) this.controller.abort();
    this.controller = null;
  }

  async loop(signal) {
    let cursor = null;
    let backoff = 1000;
    while (!signal.aborted) {
      try {
        if (cursor === null) cursor = (await api.cursor()).cursor;
        const page = await api.changes(cursor, WAIT_SECONDS, signal);
        if (page.reset) { // older than the journal keeps: start from now, re-read everything
          cursor = null;
          this.onChanges(null);
          continue;
        }
        cursor = page.next_cursor;
        if (page.changes.length) this.onChanges(page.changes);
        backoff = 1000;
      } catch (err) {
        if (signal.aborted) return;
        if (err.status === 401) {
          this.onSignedOut();
          return;
        }
        if (err.code === 'invalid_cursor') cursor = null;
        await new Promise((resolve) => setTimeout(resolve, backoff));
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      }
    }
  }
}
