/** Words and numbers as the pages show them; the server's templates use the same wording. */

/** What a card says about its audience. */
export function viewersText(count) {
  return count === 0 ? "No one watching" : `${count} watching`;
}

/** A byte count in the largest unit that keeps it at or above one: "9.7 MB". */
export function formatBytes(bytes) {
  const units = ["B", "KB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}
