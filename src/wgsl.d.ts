declare module '*.wgsl?raw' {
  const source: string;
  export default source;
}

/** The compiled merge kernels (wasm/vite-plugin.ts). */
declare module 'virtual:merge-kernels-wasm' {
  const bytes: Uint8Array;
  export default bytes;
}
