// What can be done to a folder's entries: new folder, upload, download, rename, move, delete
// to the trash. The toolbar's buttons follow the selection.

import {ZIP_MAX, api, zipUrl} from './api.js';
import {askName, choose} from './dialogs.js';
import {h} from './dom.js';
import {entryKey, nameKey} from './folder_data.js';
import {isWithin, joinPath} from './format.js';
import {pickFolder} from './picker.js';
import {canPreview, showPreview} from './preview.js';
import {shareDialog} from './share_dialog.js';
import {showVersions} from './versions.js';
import {chosenFolder, droppedRoots, walkEntries} from './tree_reader.js';

const SHARED_ROOT = '/Shared with me';

/** Run `fn` on each entry in turn; the first error (with how many failed) is thrown after. */
async function each(entries, fn) {
  const failed = [];
  for (const entry of entries) {
    try {
      await fn(entry);
    } catch (err) {
      failed.push([entry, err]);
    }
  }
  if (failed.length) {
    const [entry, err] = failed[0];
    const more = failed.length > 1 ? ` (and ${failed.length - 1} more failed)` : '';
    throw Object.assign(new Error(`${entry.name}: ${err.message}${more}`), {cause: err});
  }
}

/** "a.txt" -> "a (1).txt", "a (2).txt", ...: the first that `taken` (name keys) lacks. */
export function freeName(name, taken) {
  if (!taken.has(nameKey(name))) return name;
  const dot = name.lastIndexOf('.');
  const [stem, ext] = dot > 0 ? [name.slice(0, dot), name.slice(dot)] : [name, ''];
  for (let i = 1; ; i++) {
    const candidate = `${stem} (${i})${ext}`;
    if (!taken.has(nameKey(candidate))) return candidate;
  }
}

export function folderActions(view, shell) {
  const buttons = {};
  const button = (name, label, onclick, cls = 'button') => {
    buttons[name] = h('button', {type: 'button', class: cls, onclick}, label);
    return buttons[name];
  };
  let input;
  let uploadLabel;
  const uploadInputs = [];
  /** A file input whose choice goes to `onFiles`; its <label> is the visible button. */
  const fileInput = (id, attrs, onFiles) => {
    const el = h('input', {type: 'file', id, class: 'visually-hidden', ...attrs,
                           onchange: () => {
                             const files = [...el.files];
                             el.value = '';
                             onFiles(files);
                           }});
    uploadInputs.push(el);
    return el;
  };

  const actions = {
    toolbar() {
      input = h('input', {type: 'file', id: 'upload-input', multiple: true, class: 'visually-hidden',
                          onchange: () => {
                            const files = [...input.files];
                            input.value = '';
                            actions.upload(files);
                          }});
      uploadLabel = h('label', {for: 'upload-input', class: 'button primary upload-label'},
                       'Upload files');
      return h('div', {class: 'toolbar', role: 'toolbar', 'aria-label': 'Folder actions'},
        button('newFolder', 'New folder', () => actions.newFolder()), input, uploadLabel,
        fileInput('upload-folder-input', {webkitdirectory: true, multiple: true},
                  (files) => actions.uploadTree(chosenFolder(files), [])),
        h('label', {for: 'upload-folder-input', class: 'button upload-label'}, 'Upload folder'),
        // On a phone the camera: capture asks for it instead of the file chooser.
        fileInput('upload-camera-input', {accept: 'image/*,video/*', capture: 'environment'},
                  (files) => actions.upload(files)),
        h('label', {for: 'upload-camera-input', class: 'button upload-label camera-label'},
          'Take photo'),
        h('span', {class: 'selection-count', 'aria-live': 'polite'}),
        h('div', {class: 'selection-actions'},
          button('download', 'Download', () => actions.download()),
          button('rename', 'Rename', () => actions.rename()),
          button('move', 'Move', () => actions.move()),
          button('preview', 'Preview', () => actions.preview()),
          button('versions', 'Versions', () => actions.versions()),
          button('share', 'Share', () => actions.share()),
          button('trash', 'Delete', () => actions.trash(), 'button danger')));
    },

    /** Enable what the selection allows; /Shared with me itself takes no new files. */
    update() {
      const sel = view.selection();
      const virtualHere = view.path === SHARED_ROOT;
      buttons.newFolder.disabled = virtualHere;
      for (const el of [input, ...uploadInputs]) {
        el.disabled = virtualHere;
        el.labels[0].classList.toggle('disabled', virtualHere);
      }
      // One file by its link; folders and selections as a zip the server streams.
      buttons.download.disabled = sel.length === 0 || sel.length > ZIP_MAX
        || sel.some((entry) => !entry.file_id);
      buttons.rename.disabled = sel.length !== 1;
      buttons.move.disabled = sel.length === 0;
      buttons.trash.disabled = sel.length === 0;
      buttons.versions.disabled = !(sel.length === 1 && !sel[0].is_directory);
      buttons.preview.disabled = !(sel.length === 1 && canPreview(sel[0]));
      // Only the owner shares: nothing in /Shared with me.
      buttons.share.disabled = sel.length !== 1 || isWithin(view.path, SHARED_ROOT);
      const count = view.toolbar.querySelector('.selection-count');
      count.textContent = sel.length ? `${sel.length} selected` : '';
      view.toolbar.classList.toggle('none-selected', sel.length === 0);
    },

    newFolder() {
      return askName({title: 'New folder', label: 'Folder name', submit: 'Create',
                      value: 'New folder', onSubmit: async (name) => {
        const folder = await api.createFolder(joinPath(view.path, name));
        await view.refresh();
        view.selectKey(entryKey(folder));
        shell.notify(`Created folder “${name}”.`);
        return folder;
      }});
    },

    /** Upload `files` into the open folder; names that exist there ask: replace or keep both. */
    async upload(files) {
      const folder = view.path;
      const taken = new Set(view.entries.map((e) => e._key));
      // Only a file can be replaced; a folder of that name refuses the upload (its error shows).
      const existingFiles = new Set(view.entries.filter((e) => !e.is_directory).map((e) => e._key));
      const clashes = files.filter((f) => existingFiles.has(nameKey(f.name)));
      let keepBoth = false;
      if (clashes.length) {
        const names = clashes.map((f) => f.name);
        const answer = await choose({
          title: clashes.length === 1 ? `“${names[0]}” already exists`
            : `${clashes.length} files already exist`,
          message: h('p', {}, clashes.length === 1
            ? 'Replace it (the current file stays in its version history), or keep both?'
            : `${names.join(', ')}: replace them (the current files stay in their version history), or keep both?`),
          choices: [{value: 'keep', label: 'Keep both'},
                    {value: 'replace', label: 'Replace', primary: true}]});
        if (answer === null) return;
        keepBoth = answer === 'keep';
      }
      shell.uploads.add(files.map((file) => {
        const name = keepBoth ? freeName(file.name, taken) : file.name;
        taken.add(nameKey(name));
        return {file, name};
      }), folder);
    },

    /** Files with paths below the open folder (a chosen or dropped folder): upload-init
     * creates the folders on the way, POST /api/folders the empty ones. A name that exists
     * gets a new version, as drive-sync does. */
    async uploadTree(files, emptyFolders, folder = view.path) {
      if (files.length) shell.uploads.add(files, folder);
      for (const path of emptyFolders) {
        try {
          await api.createFolder(joinPath(folder, path));
        } catch (err) {
          if (err.code !== 'exists') shell.showError(err);
        }
      }
      if (emptyFolders.length) shell.changedIn(folder);
    },

    /** A drop on the listing: plain files as from the file input, folders walked as read. */
    async drop(dataTransfer) {
      if (view.path === SHARED_ROOT) return;
      const folder = view.path;
      const {entries, files} = droppedRoots(dataTransfer);
      if (!entries.some((e) => e.isDirectory)) {
        await actions.upload(files.length ? files
          : await Promise.all(entries.map((e) => new Promise((ok, no) => e.file(ok, no)))));
        return;
      }
      for await (const batch of walkEntries(entries)) {
        await actions.uploadTree(batch.files, batch.emptyFolders, folder);
      }
    },

    /** Make `el` (the folder view) take drops of files and folders. */
    acceptDrops(el) {
      const hasFiles = (e) => [...(e.dataTransfer ? e.dataTransfer.types : [])].includes('Files');
      el.addEventListener('dragover', (e) => {
        if (!hasFiles(e)) return;
        e.preventDefault();
        e.dataTransfer.dropEffect = view.path === SHARED_ROOT ? 'none' : 'copy';
        el.classList.add('drop-target');
      });
      el.addEventListener('dragleave', (e) => {
        if (!el.contains(e.relatedTarget)) el.classList.remove('drop-target');
      });
      el.addEventListener('drop', (e) => {
        if (!hasFiles(e)) return;
        e.preventDefault();
        el.classList.remove('drop-target');
        actions.drop(e.dataTransfer).catch((err) => shell.showError(err));
      });
    },

    download() {
      const sel = view.selection();
      if (sel.length === 1 && !sel[0].is_directory) {
        view.openEntry(sel[0]);
        return;
      }
      if (!sel.length || sel.length > ZIP_MAX) return;
      // A plain link: the browser saves the zip as it arrives, with its own progress.
      const link = h('a', {href: zipUrl(sel.map((entry) => entry.file_id)), download: '',
                           hidden: true});
      document.body.append(link);
      link.click();
      link.remove();
      shell.notify(sel.length === 1 ? `Downloading “${sel[0].name}” as a zip.`
        : `Downloading ${sel.length} items as a zip.`);
    },

    rename() {
      const sel = view.selection();
      if (sel.length !== 1) return null;
      const [entry] = sel;
      return askName({title: `Rename “${entry.name}”`, label: 'New name', value: entry.name,
                      submit: 'Rename', onSubmit: async (name) => {
        if (name === entry.name) return entry;
        const moved = await api.move(entry.file_id, joinPath(view.path, name));
        await view.refresh();
        view.selectKey(entryKey(moved));
        shell.notify(`Renamed “${entry.name}” to “${name}”.`);
        return moved;
      }});
    },

    move() {
      const sel = view.selection();
      if (!sel.length) return null;
      return pickFolder({items: sel, start: view.path, onMove: async (dest) => {
        await each(sel, (entry) => api.move(entry.file_id, joinPath(dest, entry.name)));
        view.selected.clear();
        await view.refresh();
        shell.notify(sel.length === 1 ? `Moved “${sel[0].name}”.` : `Moved ${sel.length} items.`);
        return dest;
      }});
    },

    preview() {
      const [entry] = view.selection();
      return canPreview(entry) ? showPreview(entry) : null;
    },

    versions() {
      const [entry] = view.selection();
      if (!entry || entry.is_directory) return null;
      return showVersions(entry, {notify: (t) => shell.notify(t), onRestored: () => view.refresh()});
    },

    share() {
      const [entry] = view.selection();
      if (!entry || isWithin(view.path, SHARED_ROOT)) return null;
      return shareDialog(entry, {notify: (t) => shell.notify(t), onChanged: () => view.refresh()});
    },

    async trash() {
      const sel = view.selection();
      if (!sel.length) return;
      try {
        await each(sel, (entry) => api.trash(entry.file_id));
        shell.notify(sel.length === 1 ? `Moved “${sel[0].name}” to the trash.`
          : `Moved ${sel.length} items to the trash.`);
      } catch (err) {
        shell.showError(err);
      }
      view.selected.clear();
      await view.refresh();
      view.focusRow(view.focus);
    },
  };
  return actions;
}
