// Module hooks that let Node load dt-sql-parser. Its `dist/` is ES modules written for bundlers:
// `.js` files in a package without `"type": "module"`, imported by extensionless paths
// (`'../common/basicSQL'`) and directory paths (`'./parser'`), which Node's ESM resolver refuses.
// For files of that package only, a failed relative import is retried as `<path>.js`, then
// `<path>/index.js`, and its `.js` files load as ES modules. Registered by parse.mjs.

const PACKAGE = "/node_modules/dt-sql-parser/dist/";

function inPackage(url) {
  return typeof url === "string" && url.startsWith("file:") && url.includes(PACKAGE);
}

export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context);
  } catch (error) {
    if (!inPackage(context.parentURL) || !specifier.startsWith(".")) {
      throw error;
    }
    for (const suffix of [".js", "/index.js"]) {
      try {
        return await nextResolve(specifier + suffix, context);
      } catch {
        // try the next form
      }
    }
    throw error;
  }
}

export async function load(url, context, nextLoad) {
  if (inPackage(url) && url.endsWith(".js")) {
    return nextLoad(url, { ...context, format: "module" });
  }
  return nextLoad(url, context);
}
