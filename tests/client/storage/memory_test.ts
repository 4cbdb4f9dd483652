import { MemoryStorage } from "../../../src/client/storage/memory.ts";
import { runStorageTests } from "../../_helpers/storage_conformance.ts";

runStorageTests("MemoryStorage", () => new MemoryStorage());
