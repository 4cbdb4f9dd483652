/**
 * The field that marks a soak write as one the server refuses: `_server.ts`
 * refuses (through `validateChangeset`) every changeset that sets it, and
 * `_engine.ts` sets it on its "rejected" writes.
 */
export const POISON_FIELD = "poison";
