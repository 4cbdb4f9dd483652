import { type HubContext, RealmHub } from "./realm_hub.ts";

/**
 * The hubs of one server, one per realm with bound sessions (or binds in
 * progress). A hub is reference-counted and closed, with its watch, when
 * the last user releases it, so an idle realm costs nothing in memory.
 */
export class RealmRegistry {
  #hubs = new Map<string, { hub: RealmHub; references: number }>();
  #context: HubContext;
  #closing = new Set<Promise<void>>();

  /** @param context What every hub needs from the server. */
  constructor(context: HubContext) {
    this.#context = context;
  }

  /** Number of realms with a hub in this process. */
  get size(): number {
    return this.#hubs.size;
  }

  /** Returns the realm's hub, creating it if needed; pair with release. */
  acquire(path: string): RealmHub {
    let slot = this.#hubs.get(path);
    if (slot === undefined) {
      slot = { hub: new RealmHub(path, this.#context), references: 0 };
      this.#hubs.set(path, slot);
    }
    slot.references++;
    return slot.hub;
  }

  /** Gives back a reference; the last one closes the hub. */
  release(hub: RealmHub): void {
    const slot = this.#hubs.get(hub.path);
    if (slot === undefined || slot.hub !== hub) return;
    slot.references--;
    if (slot.references > 0) return;
    this.#hubs.delete(hub.path);
    const closing = hub.close();
    this.#closing.add(closing);
    closing.finally(() => this.#closing.delete(closing));
  }

  /** Closes every hub (at shutdown) and waits for all closes to finish. */
  async closeAll(): Promise<void> {
    for (const { hub } of this.#hubs.values()) {
      const closing = hub.close();
      this.#closing.add(closing);
      closing.finally(() => this.#closing.delete(closing));
    }
    this.#hubs.clear();
    await Promise.all(this.#closing);
  }
}
