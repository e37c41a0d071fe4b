// Copying a secret shown once (a new link's URL, a new app password) to the clipboard.

/** Put `input`'s text on the clipboard and say so; where the Clipboard API is missing or
 * refused (a page over plain http), select the text for Ctrl+C instead. */
export async function copyText(input, what, notify) {
  try {
    if (!navigator.clipboard) throw new Error('no clipboard');
    await navigator.clipboard.writeText(input.value);
    notify(`${what[0].toUpperCase()}${what.slice(1)} copied.`);
  } catch {
    input.focus();
    input.select();
    notify(`Press Ctrl+C to copy the selected ${what}.`);
  }
}
