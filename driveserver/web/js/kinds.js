// What kind of file a name is, for choosing how a page shows it (the server decides what may be
// shown inline and as what: content?inline=1; see driveserver/previews/inline.py).

export const IMAGE = /\.(jpe?g|png|gif|webp|avif|bmp)$/i;
export const VIDEO = /\.(mp4|m4v|webm|ogv|mov)$/i;
export const AUDIO = /\.(mp3|m4a|ogg|oga|opus|wav|flac)$/i;
export const PDF = /\.pdf$/i;
export const TEXT = /\.(txt|md|markdown|rst|csv|tsv|log|json|ya?ml|toml|ini|cfg|conf|xml|html?|svg|css|m?js|ts|py|rb|go|rs|java|kt|c|h|cc|cpp|hpp|cs|php|sh|bash|zsh|sql|tex|swift|lua|pl|r)$/i;
export const TEXT_LIMIT = 1024 * 1024; // text previews show the first MiB
