// What a drop or the folder input holds, as files with paths relative to the open folder.
//
// A dropped folder is a FileSystemDirectoryEntry (DataTransferItem.webkitGetAsEntry); its
// reader hands out at most ~100 entries a call, so a tree is walked a directory at a time and
// handed on in batches as it is read: the uploads start while a tree of 10,000 files is still
// being walked, and only names and File handles are ever held, never a file's bytes.

const MAX_DEPTH = 64; // deeper than any real tree; a cycle of links cannot walk forever
const BATCH = 100;

/** The entries of a drop. Must be called in the drop handler itself: a DataTransfer's items
 * are emptied once the event returns. Without entries (an old browser), its plain files. */
export function droppedRoots(dataTransfer) {
  const entries = [...(dataTransfer.items || [])]
    .filter((item) => item.kind === 'file')
    .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null))
    .filter(Boolean);
  if (entries.length) return {entries, files: []};
  return {entries: [], files: [...(dataTransfer.files || [])]};
}

function fileOf(entry) {
  return new Promise((resolve, reject) => entry.file(resolve, reject));
}

function readBatch(reader) {
  return new Promise((resolve, reject) => reader.readEntries(resolve, reject));
}

/**
 * Walk `entries` depth-first, yielding batches {files: [{file, name}], emptyFolders: [path]}
 * where `name` is the path below the drop ("photos/2024/a.jpg").
 */
export async function* walkEntries(entries) {
  let batch = {files: [], emptyFolders: []};
  const stack = entries.map((entry) => ({entry, path: entry.name, depth: 0})).reverse();
  while (stack.length) {
    const {entry, path, depth} = stack.pop();
    if (entry.isFile) {
      batch.files.push({file: await fileOf(entry), name: path});
    } else if (entry.isDirectory && depth < MAX_DEPTH) {
      const reader = entry.createReader();
      const children = [];
      for (let got; (got = await readBatch(reader)).length;) children.push(...got);
      if (!children.length) batch.emptyFolders.push(path);
      for (const child of children.reverse()) {
        stack.push({entry: child, path: `${path}/${child.name}`, depth: depth + 1});
      }
    }
    if (batch.files.length + batch.emptyFolders.length >= BATCH) {
      yield batch;
      batch = {files: [], emptyFolders: []};
    }
  }
  if (batch.files.length || batch.emptyFolders.length) yield batch;
}

/** The folder input's files ([File] with webkitRelativePath) as [{file, name}]. */
export function chosenFolder(files) {
  return files.map((file) => ({file, name: file.webkitRelativePath || file.name}));
}
