// This module is browser compatible.

/**
 * Trims the consumed prefix of a list read from the front by a head index
 * (`items[0, head)` are done with), so that dropping entries one at a time
 * costs amortised constant time instead of an `Array.shift()` each: the
 * list is emptied once fully consumed, and the prefix is cut only when it
 * is long and at least half the list. Returns the new head.
 */
export function trimConsumed<T>(items: T[], head: number): number {
  if (head === items.length) {
    items.length = 0;
    return 0;
  }
  if (head > 1024 && head * 2 > items.length) {
    items.splice(0, head);
    return 0;
  }
  return head;
}
