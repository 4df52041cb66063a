/**
 * Ordered acknowledgement of work sent out of order. Batches leave in order, each with a ticket that says
 * which position it covers up to; their answers come back in any order. The watermark is the position of
 * the longest prefix of tickets that all succeeded: the only position that may be saved as a checkpoint.
 * A ticket that failed stops the watermark for good (nothing after it is ever saved by this run), whatever
 * is acknowledged after it. Pure bookkeeping: no I/O, no timers.
 */
export type Ticket = number;

type TicketState = 'out' | 'done' | 'failed';

interface Entry<P> {
  readonly position: P | undefined;
  state: TicketState;
}

export class Watermark<P> {
  /** Tickets not yet folded into the watermark, by number; the lowest is `#base`. */
  readonly #entries = new Map<Ticket, Entry<P>>();
  #base: Ticket = 0;
  #next: Ticket = 0;
  #position: P | undefined;
  #failed = false;

  /** `initial`: the position already saved (where this run started reading after). */
  constructor(initial?: P) {
    this.#position = initial;
  }

  /**
   * A batch (or a position reached without a batch) leaves, in reading order: its ticket. `position` is the
   * position the batch covers up to; undefined when it moves nothing (its position follows with a later one).
   */
  issue(position: P | undefined): Ticket {
    const ticket = this.#next++;
    this.#entries.set(ticket, { position, state: 'out' });
    return ticket;
  }

  /** A position reached with nothing to send (an idle stream, an ignored event): done once what is out is. */
  mark(position: P | undefined): void {
    this.done(this.issue(position));
  }

  /** The ticket's batch is acknowledged. Returns whether the watermark moved. */
  done(ticket: Ticket): boolean {
    this.#settle(ticket, 'done');
    return this.#advance();
  }

  /** The ticket's batch failed: the watermark never passes it. */
  fail(ticket: Ticket): void {
    this.#settle(ticket, 'failed');
    this.#failed = true;
  }

  /** The end of the longest acknowledged prefix (the initial position while nothing new is acknowledged). */
  get position(): P | undefined {
    return this.#position;
  }

  /** Tickets issued and not yet done or failed. */
  get outstanding(): number {
    let count = 0;
    for (const entry of this.#entries.values()) if (entry.state === 'out') count++;
    return count;
  }

  /** Whether some ticket failed (then the watermark is stuck before it). */
  get failed(): boolean {
    return this.#failed;
  }

  #settle(ticket: Ticket, state: TicketState): void {
    const entry = this.#entries.get(ticket);
    if (entry?.state !== 'out') {
      throw new Error(`watermark: ticket ${ticket} is not outstanding`);
    }
    entry.state = state;
  }

  #advance(): boolean {
    let moved = false;
    for (;;) {
      const entry = this.#entries.get(this.#base);
      if (entry?.state !== 'done') return moved;
      this.#entries.delete(this.#base);
      this.#base++;
      if (entry.position !== undefined) {
        this.#position = entry.position;
        moved = true;
      }
    }
  }
}
