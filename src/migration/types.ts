/** Domain types of the migration layer; free of protobuf and HTTP. */

export type FileKind = "FILE" | "DIRECTORY";

/** One listed path (Java: InstanceFileInfo). */
export interface FileEntry {
  /** /api/v1/live-migration/files/<dirType>/<dirIndex>/<percent-encoded relative path> */
  readonly fileUrl: string;
  /** Bytes; -1 for directories. */
  readonly size: number;
  readonly fileType: FileKind;
  /** Epoch milliseconds. */
  readonly lastModifiedTime: number;
  /**
   * Digest of the content, read through the descriptor the size and mtime came from; only in
   * a verification's listings, and only for the regular files small enough to hash as listed.
   */
  readonly digest?: string;
}

/** The verification digests of the REST API, plus the plane's integrity hash. */
export type DigestAlgorithmName = "MD5" | "XXHash32" | "XXH64";

export type MigrationState = "NOT_COMPLETED" | "COMPLETED";

/** The persisted completion record of one instance (Java: LiveMigrationStatus). */
export interface MigrationStatus {
  readonly state: MigrationState;
  /** Epoch ms when completion was recorded; null when NOT_COMPLETED. */
  readonly endTime: number | null;
}
