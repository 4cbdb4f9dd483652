/**
 * The package version, as `deno.json` states it (a test keeps the two
 * equal), for `--version` and the status page.
 */

/** The version of `@tether/sync` this file belongs to. */
export const PACKAGE_VERSION = "0.1.0";
