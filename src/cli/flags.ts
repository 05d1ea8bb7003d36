// Library errors name options in API terms ("the `skipCorrupt` option"); the command line says the flag.
const kebab = (name: string): string => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/** "the `skipCorrupt` option" -> "--skip-corrupt", for messages printed by the `arcface` command. */
export function inCliTerms(message: string): string {
  return message.replace(/(?:the )?`([a-zA-Z][a-zA-Z0-9]*)` option/g, (_, name: string) => `--${kebab(name)}`);
}
