// Errors that the CLI prints as one line (no stack) with a non-zero exit code.
// Each carries the file (and key/offset where known) that caused it.
export class ArcfaceError extends Error {
  constructor(message: string, readonly file?: string) {
    super(file && !message.includes(file) ? `${file}: ${message}` : message);
    this.name = 'ArcfaceError';
  }
}
