// The gateway's checks before a request reaches tritonserver (nginx njs, deploy/gateway/nginx.conf.template):
// the API and admin keys (from the environment, as tritonserver's own flags take them), and the
// declared shape of every input of a KServe v2 inference request against the values it carries.
// Triton 2.51 allocates an input's declared size over HTTP JSON before comparing it with the data
// (a 150-byte request declaring [1, 1000000000] costs it gigabytes); here such a request is a 400
// naming the input, and no input may declare more than GATEWAY_MAX_ELEMENTS values.

const API_HEADER = 'triton-patterns-api-key';
const ADMIN_HEADER = 'triton-patterns-admin-key';
const GRPC_PREFIX = 'triton-grpc-protocol-';
const DTYPE_BYTES = {BOOL: 1, INT8: 1, UINT8: 1, INT16: 2, UINT16: 2, FP16: 2, BF16: 2, INT32: 4, UINT32: 4,
                     FP32: 4, INT64: 8, UINT64: 8, FP64: 8};

function keyOk(r, env, header) {
    const key = process.env[env];
    if (!key) {
        return true;  // no key configured: this group is open
    }
    const given = r.headersIn[header] || r.headersIn[GRPC_PREFIX + header];
    return given === key;
}

// js_set variables: "1" when the request may pass, "0" when its key is missing or wrong
function apiKeyOk(r) {
    return keyOk(r, 'TRITON_PATTERNS_API_KEY', API_HEADER) ? '1' : '0';
}

function adminKeyOk(r) {
    // the admin APIs stay locked when no admin key is configured (the launcher's default)
    return process.env.TRITON_PATTERNS_ADMIN_KEY && keyOk(r, 'TRITON_PATTERNS_ADMIN_KEY', ADMIN_HEADER) ? '1' : '0';
}

function reply(r, status, message) {
    r.headersOut['Content-Type'] = 'application/json';
    r.return(status, JSON.stringify({error: message}));
}

// the number of leaf values of a JSON `data` (nested arrays flattened, as KServe v2 allows)
function countValues(data) {
    if (!Array.isArray(data)) {
        return 1;
    }
    let n = 0;
    for (let i = 0; i < data.length; i++) {
        n += Array.isArray(data[i]) ? countValues(data[i]) : 1;
    }
    return n;
}

// An error message for one input, or '' when its declared shape fits what it carries.
function checkInput(input, maxElements) {
    const name = typeof input.name === 'string' ? input.name : '?';
    const shape = input.shape;
    if (!Array.isArray(shape)) {
        return `input '${name}': shape must be a list of non-negative integers`;
    }
    let elements = 1;
    for (let i = 0; i < shape.length; i++) {
        const d = shape[i];
        if (typeof d !== 'number' || !Number.isInteger(d) || d < 0) {
            return `input '${name}': shape ${JSON.stringify(shape)} must be a list of non-negative integers`;
        }
        elements *= d;
    }
    if (elements > maxElements) {
        return `input '${name}': shape ${JSON.stringify(shape)} declares ${elements} values; `
            + `the gateway accepts at most ${maxElements} per input`;
    }
    const params = input.parameters || {};
    if (params.shared_memory_region !== undefined) {
        return '';  // tritonserver checks the region's size
    }
    if (params.binary_data_size !== undefined) {
        const size = DTYPE_BYTES[input.datatype];
        if (size !== undefined && params.binary_data_size !== elements * size) {
            return `input '${name}': shape ${JSON.stringify(shape)} of ${input.datatype} needs `
                + `${elements * size} bytes but binary_data_size is ${params.binary_data_size}`;
        }
        return '';
    }
    const values = countValues(input.data === undefined ? [] : input.data);
    if (values !== elements) {
        return `input '${name}': shape ${JSON.stringify(shape)} declares ${elements} values `
            + `but data has ${values}`;
    }
    return '';
}

// js_content of /v2/models/<model>[/versions/<v>]/infer: keys, then every input's shape; a request
// that passes goes on to tritonserver (@triton) with the body nginx has already read.
function infer(r) {
    if (apiKeyOk(r) !== '1') {
        return reply(r, 401, `missing or wrong ${API_HEADER} header`);
    }
    const body = r.requestBuffer;
    if (body === undefined || body.length === 0) {
        return reply(r, 400, 'an inference request needs a JSON body with "inputs"');
    }
    const headerLength = r.headersIn['Inference-Header-Content-Length'];
    let request;
    try {
        const json = headerLength === undefined ? body : body.slice(0, Number(headerLength));
        request = JSON.parse(json.toString());
    } catch (e) {
        return reply(r, 400, `the request's JSON does not parse: ${e.message}`);
    }
    if (request === null || typeof request !== 'object' || !Array.isArray(request.inputs)) {
        return reply(r, 400, 'the request must be a JSON object with a list "inputs"');
    }
    const maxElements = Number(r.variables.gateway_max_elements);
    for (let i = 0; i < request.inputs.length; i++) {
        const input = request.inputs[i];
        const problem = input !== null && typeof input === 'object'
            ? checkInput(input, maxElements) : `inputs[${i}] must be an object`;
        if (problem) {
            return reply(r, 400, problem);
        }
    }
    r.internalRedirect('@triton');
}

export default {apiKeyOk, adminKeyOk, infer, checkInput, countValues};
