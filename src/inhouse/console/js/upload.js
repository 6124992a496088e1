// File uploads with progress: one multipart POST /v1/files for ordinary files, the Uploads API in parts above
// PARTS_ABOVE bytes (so a large file is sent in pieces the server can take one at a time).

export const PARTS_ABOVE = 32 * 1024 * 1024;
export const PART_BYTES = 16 * 1024 * 1024;   // well under the server's 64 MB part cap

const TYPES = {jsonl: 'application/jsonl', json: 'application/json', txt: 'text/plain', csv: 'text/csv',
               md: 'text/markdown', pdf: 'application/pdf', png: 'image/png', jpg: 'image/jpeg', jpeg: 'image/jpeg'};

function mimeOf(file) {
  if (file.type) return file.type;
  const ext = file.name.split('.').pop().toLowerCase();
  return TYPES[ext] || 'application/octet-stream';
}

/** Upload one file; onProgress(sent, total) as bytes go out. Resolves to the File object. */
export async function uploadFile(api, file, purpose, onProgress, signal) {
  if (file.size <= PARTS_ABOVE) {
    const form = new FormData();
    form.append('purpose', purpose);  // before the file, so the server checks the content while it streams
    form.append('file', file, file.name);
    return api.sendForm('/files', form, (sent, total) => onProgress(Math.min(sent, file.size), file.size), signal);
  }
  const upload = await api.post('/uploads', {filename: file.name, purpose, bytes: file.size, mime_type: mimeOf(file)});
  const partIds = [];
  try {
    for (let start = 0; start < file.size; start += PART_BYTES) {
      const form = new FormData();
      form.append('data', file.slice(start, start + PART_BYTES), file.name);
      const part = await api.sendForm(`/uploads/${upload.id}/parts`, form,
        (sent, total) => onProgress(start + Math.min(sent, total), file.size), signal);
      partIds.push(part.id);
    }
    const done = await api.post(`/uploads/${upload.id}/complete`, {part_ids: partIds});
    onProgress(file.size, file.size);
    return done.file;
  } catch (err) {
    api.post(`/uploads/${upload.id}/cancel`, {}).catch(() => {});  // best effort: free what the server holds
    throw err;
  }
}
