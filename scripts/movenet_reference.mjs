// Reference outputs of TF.js graph models computed by the original TF.js runtime, for tests/test_movenet.py
// (MoveNet MultiPose) and tests/test_people.py (MoveNet Thunder, CenterNet).
//
// The model runs in @tensorflow/tfjs 4.22.0 (pure JavaScript, CPU backend; tfjs-node is not needed) on NHWC
// inputs decoded in Python, so both sides see identical pixels. The result (tests/data/*_reference.json) holds, per
// input, the image, the input shape, the SHA-256 of the input bytes and the raw output. An input listed with
// "dtype": "float32" is read as float32 (default int32); --output names the tensor to return (default: the
// model's signature output, which must then be the only one).
//
// Regenerate:
//   mkdir -p /tmp/tfjsref && (cd /tmp/tfjsref && npm init -y >/dev/null && npm install @tensorflow/tfjs@4.22.0)
//   .venv/bin/metahmr weights fetch-open                       # the model, into ./weights/keypoints/movenet-multipose/
//   .venv/bin/python tests/test_movenet.py write-inputs /tmp/movenet-inputs
//   node scripts/movenet_reference.mjs --tfjs /tmp/tfjsref \
//       --model weights/keypoints/movenet-multipose/movenet-multipose.json \
//       --inputs /tmp/movenet-inputs/inputs.json --out tests/data/movenet_reference.json
//
// MoveNet Thunder and CenterNet (tests/data/people_reference.json: run the script once per model, then merge):
//   .venv/bin/python tests/test_people.py write-inputs /tmp/people-inputs
//   node scripts/movenet_reference.mjs --tfjs /tmp/tfjsref \
//       --model weights/keypoints/movenet-thunder/movenet-thunder.json \
//       --inputs /tmp/people-inputs/thunder/inputs.json --out /tmp/people-inputs/thunder.json
//   node scripts/movenet_reference.mjs --tfjs /tmp/tfjsref --model weights/detectors/centernet/centernet.json \
//       --inputs /tmp/people-inputs/centernet/inputs.json --out /tmp/people-inputs/centernet.json \
//       --output tower_0/detections
//   .venv/bin/python tests/test_people.py merge-references /tmp/people-inputs tests/data/people_reference.json

import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

function parseArgs(argv) {
  const args = { tfjs: '/tmp/tfjsref', model: null, inputs: null, out: null, output: null };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in args) || i + 1 >= argv.length) throw new Error(`unknown or incomplete argument ${argv[i]}`);
    args[key] = argv[i + 1];
  }
  for (const key of ['model', 'inputs', 'out']) {
    if (!args[key]) throw new Error(`--${key} is required (see the comment at the top of this script)`);
  }
  return args;
}

function sha256(buffer) {
  return createHash('sha256').update(buffer).digest('hex');
}

// An IOHandler that reads model.json and its weight shards from disk (the pure-JS package has no file:// loader).
function fileHandler(modelPath) {
  return {
    load: async () => {
      const model = JSON.parse(readFileSync(modelPath, 'utf8'));
      const dir = path.dirname(modelPath);
      const weightSpecs = [];
      const shards = [];
      for (const group of model.weightsManifest) {
        weightSpecs.push(...group.weights);
        for (const p of group.paths) shards.push(readFileSync(path.join(dir, p)));
      }
      const all = Buffer.concat(shards);
      const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
      return {
        modelTopology: model.modelTopology,
        format: model.format,
        generatedBy: model.generatedBy,
        convertedBy: model.convertedBy,
        signature: model.signature,
        weightSpecs,
        weightData,
      };
    },
  };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const require = createRequire(path.join(path.resolve(args.tfjs), 'package.json'));
  const tf = require('@tensorflow/tfjs');
  await tf.setBackend('cpu');
  await tf.ready();
  const model = await tf.loadGraphModel(fileHandler(args.model));
  const index = JSON.parse(readFileSync(args.inputs, 'utf8'));
  const cases = [];
  for (const item of index.inputs) {
    const bytes = readFileSync(path.join(path.dirname(args.inputs), item.file));
    const digest = sha256(bytes);
    if (digest !== item.sha256) throw new Error(`${item.file}: checksum ${digest} != ${item.sha256}`);
    const dtype = item.dtype || 'int32';
    const data = dtype === 'float32'
      ? new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)
      : new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
    const x = tf.tensor4d(data, item.shape, dtype);
    const y = args.output ? model.execute(x, args.output) : model.execute(x);
    cases.push({
      name: item.name,
      image: item.image,
      shape: item.shape,
      input_sha256: digest,
      output_shape: y.shape,
      output: Array.from(y.dataSync()),
    });
    tf.dispose([x, y]);
    console.log(`${item.name}: input ${item.shape.join('x')} -> output ${y.shape.join('x')}`);
  }
  const result = {
    generator: 'scripts/movenet_reference.mjs',
    tfjs_version: tf.version.tfjs,
    backend: tf.getBackend(),
    model: path.basename(args.model),
    model_sha256: sha256(readFileSync(args.model)),
    recipe: index.recipe,
    cases,
  };
  writeFileSync(args.out, JSON.stringify(result) + '\n');
  console.log(`wrote ${args.out}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
