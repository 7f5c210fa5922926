// What the direct4 and subgroup4 matmul variants share (compiled before the variant's own file;
// src/gpu/kernels/matmul.rs lists it in their sources): the sums of 16 rows × 4 columns,
// acc[p] being row p of the block at the invocation's 4 columns, indexed only by constants.

var<private> acc: array<vec4<f32>, 16>;

// acc[p] for a computed p: through a switch, so that acc is indexed only by constants.
fn acc_at(p: u32) -> vec4<f32> {
    switch p {
        case 0u: { return acc[0]; }
        case 1u: { return acc[1]; }
        case 2u: { return acc[2]; }
        case 3u: { return acc[3]; }
        case 4u: { return acc[4]; }
        case 5u: { return acc[5]; }
        case 6u: { return acc[6]; }
        case 7u: { return acc[7]; }
        case 8u: { return acc[8]; }
        case 9u: { return acc[9]; }
        case 10u: { return acc[10]; }
        case 11u: { return acc[11]; }
        case 12u: { return acc[12]; }
        case 13u: { return acc[13]; }
        case 14u: { return acc[14]; }
        default: { return acc[15]; }
    }
}
